"""Tests of `classifiers/calibration.py`: softmax, temperature scaling and ECE."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from classifiers.calibration import (
    FloatArray,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    softmax,
)

IntArray = NDArray[np.int64]


def _calibrated_toy(seed: int = 0, samples: int = 2000) -> tuple[FloatArray, IntArray]:
    """True logits of moderate confidence and labels drawn from their softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(samples, 4))
    probabilities = softmax(logits)
    labels = np.array([rng.choice(4, p=row) for row in probabilities], dtype=np.int64)
    return logits, labels


class TestSoftmax:
    def test_rows_sum_to_one(self) -> None:
        """Each row of the softmax is a probability distribution."""
        logits = np.array([[1.0, 2.0, 3.0], [-5.0, 0.0, 5.0], [0.0, 0.0, 0.0]])
        for temperature in (0.5, 1.0, 3.0):
            result = softmax(logits, temperature)
            np.testing.assert_allclose(result.sum(axis=1), 1.0, atol=1e-12)
            assert (result >= 0).all()

    def test_temperature_one_is_plain_softmax(self) -> None:
        """Temperature 1 gives exp(x) / sum(exp(x)), row by row."""
        logits = np.array([[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]])
        expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(softmax(logits, 1.0), expected, rtol=1e-12)
        np.testing.assert_allclose(softmax(logits), expected, rtol=1e-12)

    def test_temperature_divides_the_logits(self) -> None:
        """softmax(x, T) equals softmax(x / T)."""
        logits = np.array([[1.0, 4.0, -2.0]])
        np.testing.assert_allclose(softmax(logits, 2.5), softmax(logits / 2.5), rtol=1e-12)

    def test_large_logits_do_not_overflow(self) -> None:
        """Huge logits give finite probabilities instead of NaN."""
        result = softmax(np.array([[1000.0, 999.0, -1e4]]))
        assert np.isfinite(result).all()
        np.testing.assert_allclose(result[0, :2], [1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))])


class TestFitTemperature:
    def test_over_confident_logits_get_temperature_above_one(self) -> None:
        """Logits scaled ×5 beyond the true ones are cooled by a temperature close to 5."""
        logits, labels = _calibrated_toy()
        temperature = fit_temperature(logits * 5.0, labels)
        assert temperature > 1.0
        assert 3.5 < temperature < 7.0

    def test_scaling_lowers_ece_and_nll(self) -> None:
        """The fitted temperature lowers both the ECE and the NLL of an over-confident model."""
        logits, labels = _calibrated_toy()
        over_confident = logits * 5.0
        temperature = fit_temperature(over_confident, labels)
        before = expected_calibration_error(softmax(over_confident), labels)
        after = expected_calibration_error(softmax(over_confident, temperature), labels)
        assert after < before
        assert negative_log_likelihood(
            over_confident, labels, temperature
        ) < negative_log_likelihood(over_confident, labels, 1.0)

    def test_under_confident_logits_get_temperature_below_one(self) -> None:
        """Logits shrunk ×0.2 are sharpened by a temperature below 1."""
        logits, labels = _calibrated_toy()
        assert fit_temperature(logits * 0.2, labels) < 1.0

    def test_temperature_stays_in_range(self) -> None:
        """Even perfectly separable data gives a temperature within [0.05, 20]."""
        logits = np.array([[2.0, 0.0], [0.0, 2.0]] * 10)
        labels = np.array([0, 1] * 10, dtype=np.int64)
        assert 0.05 <= fit_temperature(logits, labels) <= 20.0

    def test_empty_input_gives_one(self) -> None:
        """No validation data leaves the temperature at 1.0."""
        assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)) == 1.0


class TestExpectedCalibrationError:
    def test_calibrated_by_construction_is_small(self) -> None:
        """Labels drawn from the predicted probabilities give an ECE below 0.05."""
        logits, labels = _calibrated_toy(seed=1, samples=5000)
        assert expected_calibration_error(softmax(logits), labels) < 0.05

    def test_confident_and_wrong_is_large(self) -> None:
        """Confidence 0.9 on predictions that are all wrong gives an ECE of 0.9."""
        probabilities = np.array([[0.9, 0.1]] * 10)
        labels = np.ones(10, dtype=np.int64)
        assert expected_calibration_error(probabilities, labels) == pytest.approx(0.9)

    def test_hand_computed_two_bins(self) -> None:
        """ECE is the sample-weighted gap between confidence and accuracy per bin."""
        probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.6, 0.4]])
        labels = np.array([0, 1, 0, 0], dtype=np.int64)
        # bin (0.9, 1.0]: confidence 0.95, accuracy 0.5; bin (0.5, 0.6]: confidence 0.6, accuracy 1.
        expected = 0.5 * abs(0.95 - 0.5) + 0.5 * abs(0.6 - 1.0)
        assert expected_calibration_error(probabilities, labels) == pytest.approx(expected)

    def test_empty_input_is_zero(self) -> None:
        """No examples means no calibration error."""
        assert expected_calibration_error(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)) == 0.0
