"""Temperature scaling and expected calibration error, shared by every model kind."""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def softmax(logits: FloatArray, temperature: float = 1.0) -> FloatArray:
    """Row-wise softmax of `logits / temperature`, numerically stable."""
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    result: FloatArray = exp / exp.sum(axis=1, keepdims=True)
    return result


def negative_log_likelihood(
    logits: FloatArray, labels: NDArray[np.int64], temperature: float
) -> float:
    probabilities = softmax(logits, temperature)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(logits: FloatArray, labels: NDArray[np.int64]) -> float:
    """The temperature in [0.05, 20] minimising the NLL of `labels` (Guo et al., 2017).

    A one-parameter convex-enough problem: a log-spaced grid, then a golden-section refinement
    around the best grid point, is robust and needs no optimiser dependency.
    """
    if len(labels) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 60))
    losses = [negative_log_likelihood(logits, labels, t) for t in grid]
    best = int(np.argmin(losses))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a = high - ratio * (high - low)
        b = low + ratio * (high - low)
        if negative_log_likelihood(logits, labels, a) < negative_log_likelihood(logits, labels, b):
            high = b
        else:
            low = a
    return float((low + high) / 2)


def expected_calibration_error(
    probabilities: FloatArray, labels: NDArray[np.int64], bins: int = 10
) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(error)
