"""Tests of worker/intake_http.py: the HTTP e-form intake, its publishers and its life cycle."""

from __future__ import annotations

import email
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from classifiers.safety import SafetyRules
from classifiers.taxonomy import Taxonomy
from tests.conftest import FIXTURES, LogEntries
from tests.twins import FlakyDeliverer, KeywordClassifier
from worker import exit_codes
from worker.broker import (
    HEADER_CHANNEL,
    HEADER_REQUEST_ID,
    BrokerError,
    StubBroker,
    Topology,
    UnroutableError,
)
from worker.config import BrokerSettings, IntakeSettings, Settings
from worker.decision_log import DecisionLog
from worker.delivery import build_deliverers
from worker.errors import ConfigError, ParseError, PermanentError
from worker.intake_http import (
    broker_publisher,
    pipeline_publisher,
    run_http_intake,
    serve_http_intake,
)
from worker.parsing import ParseLimits, load_eform, parse_eform
from worker.pipeline import Pipeline
from worker.routing import RoutingConfig
from worker.runtime import Configuration

FORMS = FIXTURES / "forms"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FORMS / "expected.json").read_text("utf-8"))
VALID = sorted(name for name, case in EXPECTED.items() if case["expect"] == "ok")
INVALID_FIELD = sorted(
    (name, case["field"])
    for name, case in EXPECTED.items()
    if case["expect"] == "error" and case["field"] is not None
)
INVALID_DOCUMENT = sorted(
    name for name, case in EXPECTED.items() if case["expect"] == "error" and case["field"] is None
)
JSON_HEADERS = {"Content-Type": "application/json"}
TOKEN = "s3cret-token"
LAMPADAIRE = json.dumps(
    {
        "form_id": "signalement",
        "submitted_at": "2025-06-03T09:41:27+02:00",
        "message": "Le lampadaire devant le 4 rue des Lilas est éteint depuis lundi.",
    },
    ensure_ascii=False,
).encode("utf-8")


def _form(name: str) -> bytes:
    return (FORMS / name).read_bytes()


def _reason(data: bytes) -> str:
    """The reason `load_eform` gives for refusing `data`."""
    with pytest.raises(ParseError) as caught:
        load_eform(data)
    return caught.value.reason


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    document: Any


def _reply(response: http.client.HTTPResponse) -> Reply:
    data = response.read()
    return Reply(response.status, response.headers, json.loads(data) if data else None)


class Intake:
    """A running intake server and an HTTP client for it."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.port = int(server.server_address[1])

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            return _reply(connection.getresponse())
        finally:
            connection.close()

    def post(self, body: bytes, path: str = "/forms", **headers: str) -> Reply:
        return self.request("POST", path, body, {**JSON_HEADERS, **headers})

    def headers_only(self, headers: dict[str, str]) -> Reply:
        """POST /forms with exactly these headers and no body sent (the answer must not wait)."""
        connection = self.connection()
        try:
            connection.putrequest("POST", "/forms", skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            return _reply(connection.getresponse())
        finally:
            connection.close()

    def raw(self, head: bytes, body: bytes | None = None) -> tuple[bytes, bytes]:
        """Send `head`; read what comes back; then send `body` (if any) and read to the end."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(head)
            first = sock.recv(65536)
            rest = b""
            if body is not None:
                sock.sendall(body)
                while chunk := sock.recv(65536):
                    rest += chunk
        return first, rest


class FakePublish:
    """A `Publish` twin: records what it is handed, or raises `error` when one is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str]] = []
        self.error: Exception | None = None

    def __call__(self, body: bytes, request_id: str) -> None:
        if self.error is not None:
            raise self.error
        self.calls.append((body, request_id))


Start = Callable[..., Intake]


@pytest.fixture
def start() -> Iterator[Start]:
    """Starts intake servers on free ports; shuts them all down afterwards."""
    servers: list[ThreadingHTTPServer] = []

    def run(
        publish: Callable[[bytes, str], None],
        settings: IntakeSettings | None = None,
        **options: Any,
    ) -> Intake:
        server = serve_http_intake(publish, settings or IntakeSettings(http_port=0), **options)
        servers.append(server)
        return Intake(server)

    yield run
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def publish() -> FakePublish:
    return FakePublish()


@pytest.fixture
def intake(start: Start, publish: FakePublish) -> Intake:
    return start(publish)


def _maildir_files(root: Path, destination: str) -> list[Path]:
    folder = root / destination / "new"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _request_id_of(path: Path) -> str:
    return str(email.message_from_bytes(path.read_bytes())["X-Triage-Request-Id"])


class TestServeHttpIntake:
    """`serve_http_intake` answers POST /forms and GET /healthz with the documented statuses."""

    @pytest.mark.parametrize("name", VALID)
    def test_valid_form_published_verbatim(
        self, intake: Intake, publish: FakePublish, name: str
    ) -> None:
        """A valid form gets 202 with its request id, and exactly its bytes are published."""
        data = _form(name)
        reply = intake.post(data)
        request_id = parse_eform(data).id
        assert reply.status == 202
        assert reply.document == {"request_id": request_id}
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
        assert publish.calls == [(data, request_id)]

    def test_trailing_slash_accepted(self, intake: Intake, publish: FakePublish) -> None:
        """POST /forms/ is the same endpoint as POST /forms."""
        reply = intake.post(_form("valid_minimal.json"), path="/forms/")
        assert reply.status == 202
        assert len(publish.calls) == 1

    @pytest.mark.parametrize(
        "content_type",
        ["application/json", "application/json; charset=utf-8", 'Application/JSON;charset="UTF-8"'],
    )
    def test_json_content_types_accepted(
        self, intake: Intake, publish: FakePublish, content_type: str
    ) -> None:
        """application/json is accepted with or without a UTF-8 charset, in any case."""
        reply = intake.post(_form("valid_minimal.json"), **{"Content-Type": content_type})
        assert reply.status == 202
        assert len(publish.calls) == 1

    @pytest.mark.parametrize(
        "content_type",
        ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
    )
    def test_other_content_types_refused(
        self, intake: Intake, publish: FakePublish, content_type: str
    ) -> None:
        """Anything but UTF-8 JSON is refused with 415 and nothing is published."""
        reply = intake.post(_form("valid_minimal.json"), **{"Content-Type": content_type})
        assert reply.status == 415
        assert reply.document == {"error": "expected Content-Type application/json (UTF-8)"}
        assert publish.calls == []

    def test_missing_content_type_refused(self, intake: Intake, publish: FakePublish) -> None:
        """A body without a Content-Type is refused with 415."""
        reply = intake.request("POST", "/forms", _form("valid_minimal.json"))
        assert reply.status == 415
        assert publish.calls == []

    @pytest.mark.parametrize(
        "headers", [JSON_HEADERS, {**JSON_HEADERS, "Transfer-Encoding": "chunked"}]
    )
    def test_length_required(
        self, intake: Intake, publish: FakePublish, headers: dict[str, str]
    ) -> None:
        """Without a Content-Length (chunked bodies included) the answer is 411."""
        reply = intake.headers_only(headers)
        assert reply.status == 411
        assert reply.document == {"error": "Content-Length required"}
        assert publish.calls == []

    @pytest.mark.parametrize("length", ["abc", "-1", "1e3", " "])
    def test_invalid_content_length(self, intake: Intake, length: str) -> None:
        """A Content-Length that is not a decimal number is a 400."""
        reply = intake.headers_only({**JSON_HEADERS, "Content-Length": length})
        assert reply.status == 400
        assert reply.document == {"error": "invalid Content-Length"}

    def test_oversized_body_refused_unread(self, start: Start, publish: FakePublish) -> None:
        """Past http_max_bytes the 413 comes from the headers, while the body is never sent."""
        intake = start(publish, IntakeSettings(http_port=0, http_max_bytes=100))
        reply = intake.headers_only({**JSON_HEADERS, "Content-Length": "101"})
        assert reply.status == 413
        assert reply.document == {"error": "body of 101 bytes exceeds the limit of 100"}
        assert publish.calls == []

    def test_body_at_the_limit_accepted(self, start: Start, publish: FakePublish) -> None:
        """A body of exactly http_max_bytes is read and accepted."""
        data = _form("valid_minimal.json")
        intake = start(publish, IntakeSettings(http_port=0, http_max_bytes=len(data)))
        assert intake.post(data).status == 202
        assert publish.calls[0][0] == data

    def test_parser_limit_also_bounds_the_body(self, start: Start, publish: FakePublish) -> None:
        """The parser's max_form_bytes, when lower than http_max_bytes, is the limit answered."""
        intake = start(publish, limits=ParseLimits(max_form_bytes=50))
        reply = intake.post(_form("valid_minimal.json"))
        assert reply.status == 413
        assert reply.document["error"].endswith("exceeds the limit of 50")
        assert publish.calls == []

    def test_expect_continue_refused_before_the_body(
        self, start: Start, publish: FakePublish
    ) -> None:
        """With Expect: 100-continue, an oversized form gets 413 instead of 100 Continue."""
        intake = start(publish, IntakeSettings(http_port=0, http_max_bytes=100))
        head = (
            b"POST /forms HTTP/1.1\r\nHost: mairie\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        first, _ = intake.raw(head)
        assert first.startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in first
        assert publish.calls == []

    def test_expect_continue_then_accepted(self, intake: Intake, publish: FakePublish) -> None:
        """With Expect: 100-continue, a good request gets 100 Continue, then 202 for its body."""
        data = _form("valid_minimal.json")
        head = (
            b"POST /forms HTTP/1.1\r\nHost: mairie\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(data)
        )
        first, rest = intake.raw(head, data)
        assert first.startswith(b"HTTP/1.1 100 Continue")
        assert rest.startswith(b"HTTP/1.1 202 ")
        assert publish.calls == [(data, parse_eform(data).id)]

    def test_body_shorter_than_its_length(self, intake: Intake, publish: FakePublish) -> None:
        """A client that stops sending before Content-Length bytes gets a 400."""
        connection = intake.connection()
        try:
            connection.putrequest("POST", "/forms", skip_accept_encoding=True)
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", "500")
            connection.endheaders(b'{"form_id": "x"')
            assert connection.sock is not None
            connection.sock.shutdown(socket.SHUT_WR)
            reply = _reply(connection.getresponse())
        finally:
            connection.close()
        assert reply.status == 400
        assert reply.document == {"error": "body shorter than its Content-Length"}
        assert publish.calls == []

    @pytest.mark.parametrize(
        ("headers", "status"),
        [({}, 401), ({"X-Triage-Token": "wrong"}, 401), ({"X-Triage-Token": TOKEN}, 202)],
    )
    def test_token_checked(
        self, start: Start, publish: FakePublish, headers: dict[str, str], status: int
    ) -> None:
        """With a token configured, only a request carrying it in X-Triage-Token is accepted."""
        settings = IntakeSettings(http_port=0, http_token=SecretStr(TOKEN))
        intake = start(publish, settings)
        reply = intake.post(_form("valid_minimal.json"), **headers)
        assert reply.status == status
        assert len(publish.calls) == (status == 202)
        if status == 401:
            assert reply.document == {"error": "missing or wrong X-Triage-Token"}
            assert reply.headers["WWW-Authenticate"].startswith("X-Triage-Token")

    def test_no_token_configured_needs_none(self, intake: Intake) -> None:
        """Without a configured token, a request without X-Triage-Token is accepted."""
        assert intake.post(_form("valid_minimal.json")).status == 202

    @pytest.mark.parametrize(("name", "field"), INVALID_FIELD)
    def test_invalid_field_named(
        self, intake: Intake, publish: FakePublish, name: str, field: str
    ) -> None:
        """A form with a wrong field gets 422 naming the field, and nothing is published."""
        data = _form(name)
        reply = intake.post(data)
        assert reply.status == 422
        assert reply.document == {"error": _reason(data), "field": field}
        assert publish.calls == []

    @pytest.mark.parametrize("name", INVALID_DOCUMENT)
    def test_unusable_document_is_400(
        self, intake: Intake, publish: FakePublish, name: str
    ) -> None:
        """A body that is not a UTF-8 JSON object gets 400 with the parser's reason."""
        data = _form(name)
        reply = intake.post(data)
        assert reply.status == 400
        assert reply.document == {"error": _reason(data), "field": None}
        assert publish.calls == []

    def test_broker_error_is_503(self, intake: Intake, publish: FakePublish) -> None:
        """A publish that is not confirmed gets 503 with Retry-After, so the client sends again."""
        publish.error = BrokerError("not confirmed")
        data = _form("valid_full.json")
        reply = intake.post(data)
        assert reply.status == 503
        assert reply.document == {
            "error": "not accepted, try again later",
            "request_id": parse_eform(data).id,
        }
        assert reply.headers["Retry-After"] == "30"

    def test_permanent_publish_error_is_500(self, intake: Intake, publish: FakePublish) -> None:
        """An unroutable publish (a broken topology) gets a 500 with a JSON error."""
        publish.error = UnroutableError("unroutable: triage.intake/intake")
        reply = intake.post(_form("valid_full.json"))
        assert reply.status == 500
        assert reply.document["error"] == "not accepted: server error"

    @pytest.mark.parametrize(
        ("method", "path"), [("GET", "/"), ("POST", "/form"), ("GET", "/forms/1"), ("PUT", "/x")]
    )
    def test_unknown_path_is_404(self, intake: Intake, method: str, path: str) -> None:
        """Any path but /forms, /forms/ and /healthz is a 404."""
        reply = intake.request(method, path, b"{}" if method != "GET" else None, JSON_HEADERS)
        assert reply.status == 404
        assert reply.document == {"error": "not found"}

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            ("GET", "/forms", "POST"),
            ("PUT", "/forms/", "POST"),
            ("DELETE", "/forms", "POST"),
            ("OPTIONS", "/forms", "POST"),
            ("POST", "/healthz", "GET, HEAD"),
        ],
    )
    def test_wrong_method_is_405(
        self, intake: Intake, publish: FakePublish, method: str, path: str, allow: str
    ) -> None:
        """Another method on a known path is a 405 whose Allow header lists the right ones."""
        reply = intake.request(method, path, b"{}", JSON_HEADERS)
        assert reply.status == 405
        assert reply.headers["Allow"] == allow
        assert reply.document == {"error": f"method {method} not allowed"}
        assert publish.calls == []

    def test_health(self, intake: Intake) -> None:
        """GET /healthz answers 200 with {"ok": true}."""
        reply = intake.request("GET", "/healthz")
        assert (reply.status, reply.document) == (200, {"ok": True})

    def test_server_header_hides_the_python_version(self, intake: Intake) -> None:
        """The Server header names the intake and not the Python version behind it."""
        reply = intake.request("GET", "/healthz")
        assert reply.headers["Server"] == "triage-intake"

    def test_health_when_unhealthy(self, start: Start, publish: FakePublish) -> None:
        """With a health check that fails (broker gone), /healthz answers 503 {"ok": false}."""
        intake = start(publish, healthy=lambda: False)
        reply = intake.request("GET", "/healthz")
        assert (reply.status, reply.document) == (503, {"ok": False})

    def test_logs_hold_ids_and_fields_not_content(self, intake: Intake, logs: LogEntries) -> None:
        """Accepted and refused forms log the request id, status and field, never their values."""
        valid, invalid = _form("valid_full.json"), _form("submitter_bad_email.json")
        intake.post(valid)
        intake.post(invalid)
        accepted = [e for e in logs if e["event"] == "intake.form_accepted"]
        refused = [e for e in logs if e["event"] == "intake.form_refused"]
        assert [(e["request_id"], e["status"]) for e in accepted] == [(parse_eform(valid).id, 202)]
        assert [(e["status"], e["field"]) for e in refused] == [(422, "submitter.email")]
        text = repr(logs)
        personal = ["Garnier", "helene.garnier", "acte de naissance", "06 48 21 73 05"]
        personal += [v for v in json.loads(invalid)["submitter"].values() if isinstance(v, str)]
        assert [value for value in personal if value in text] == []


class TestBrokerPublisher:
    """`broker_publisher` publishes forms to the intake exchange as `triage submit` does."""

    def test_publishes_to_intake_with_headers(self) -> None:
        """The exact bytes go to the intake exchange with id and channel headers and JSON type."""
        topology = Topology("t")
        broker = StubBroker(topology)
        broker_publisher(broker, topology)(b'{"a": 1}', "fm-123")
        headers = {HEADER_REQUEST_ID: "fm-123", HEADER_CHANNEL: "form"}
        assert list(broker.queues[topology.intake].messages) == [
            (b'{"a": 1}', headers, "application/json", None)
        ]
        assert broker.journal == [("publish", topology.intake, "intake", b'{"a": 1}', "fm-123")]

    def test_unconfirmed_publish_is_503_then_retry_lands_once(self, start: Start) -> None:
        """A publish the broker does not confirm is a 503; the client's retry lands once."""
        topology = Topology("t")
        broker = StubBroker(topology)
        broker.fail_publishes = 1
        intake = start(broker_publisher(broker, topology))
        data = _form("valid_full.json")
        assert intake.post(data).status == 503
        assert intake.post(data).status == 202
        assert [body for body, *_ in broker.queues[topology.intake].messages] == [data]


class EmbeddedHarness:
    """The real rules, routing, maildirs and decision log around a classifier twin."""

    def __init__(
        self, taxonomy: Taxonomy, safety: SafetyRules, routing: RoutingConfig, tmp: Path
    ) -> None:
        self.taxonomy = taxonomy
        self.safety = safety
        self.routing = routing
        self.root = tmp / "maildir"
        self.decisions = DecisionLog(tmp / "decisions.jsonl")

    def pipeline(self, *, fail: bool = False, dead_letter_fails: bool = False) -> Pipeline:
        deliverers = build_deliverers(self.routing, self.root)
        if dead_letter_fails:
            name = self.routing.dead_letter_destination
            deliverers[name] = FlakyDeliverer(deliverers[name], 99, PermanentError)
        classifier = KeywordClassifier(self.taxonomy, fail=fail)
        return Pipeline(
            classifier, self.safety, self.routing, deliverers, self.decisions, sleep=lambda _: None
        )


@pytest.fixture
def embedded(
    taxonomy: Taxonomy, safety_rules: SafetyRules, routing_config: RoutingConfig, tmp_path: Path
) -> EmbeddedHarness:
    return EmbeddedHarness(taxonomy, safety_rules, routing_config, tmp_path)


class TestPipelinePublisher:
    """`pipeline_publisher` runs forms through the embedded pipeline; a failure is an error."""

    def test_form_delivered_into_maildir(self, start: Start, embedded: EmbeddedHarness) -> None:
        """A posted form is classified and lands in its service's maildir under its request id."""
        intake = start(pipeline_publisher(embedded.pipeline()))
        reply = intake.post(LAMPADAIRE)
        assert reply.status == 202
        [path] = _maildir_files(embedded.root, "voirie")
        assert _request_id_of(path) == reply.document["request_id"] == parse_eform(LAMPADAIRE).id
        assert [r.outcome for r in embedded.decisions.read()] == ["delivered"]

    def test_dead_lettered_form_is_500(self, start: Start, embedded: EmbeddedHarness) -> None:
        """A form the pipeline dead-letters (the model failed) gets 500 and waits in rejets."""
        intake = start(pipeline_publisher(embedded.pipeline(fail=True)))
        reply = intake.post(LAMPADAIRE)
        assert reply.status == 500
        assert reply.document == {
            "error": "not routed: kept for an agent",
            "request_id": parse_eform(LAMPADAIRE).id,
        }
        assert len(_maildir_files(embedded.root, "rejets")) == 1
        assert _maildir_files(embedded.root, "voirie") == []

    def test_failed_form_is_503(self, start: Start, embedded: EmbeddedHarness) -> None:
        """A form neither routed nor kept (dead-letter maildir failing too) gets 503."""
        intake = start(pipeline_publisher(embedded.pipeline(fail=True, dead_letter_fails=True)))
        reply = intake.post(LAMPADAIRE)
        assert reply.status == 503
        assert reply.document["request_id"] == parse_eform(LAMPADAIRE).id


def _wait_for_port(logs: LogEntries, timeout: float = 10.0) -> int:
    """The port announced by the intake.http_ready event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in list(logs):
            if entry["event"] == "intake.http_ready":
                return int(entry["port"])
        time.sleep(0.02)
    raise AssertionError("the intake never announced it was ready")


class TestRunHttpIntake:
    """`run_http_intake` builds the publisher, serves until stopped and returns an exit code."""

    def _configuration(
        self,
        settings: Settings,
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
        routing_config: RoutingConfig,
    ) -> Configuration:
        return Configuration(settings, taxonomy, safety_rules, routing_config)

    def test_embedded_serves_until_stopped(
        self,
        tmp_path: Path,
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
        routing_config: RoutingConfig,
        logs: LogEntries,
    ) -> None:
        """Embedded: a posted form reaches the state maildir; on stop the server exits 0."""
        settings = Settings(state_dir=tmp_path, intake=IntakeSettings(http_port=0))
        configuration = self._configuration(settings, taxonomy, safety_rules, routing_config)
        stop = threading.Event()
        result: list[int] = []
        thread = threading.Thread(
            target=lambda: result.append(
                run_http_intake(configuration, True, stop, classifier=KeywordClassifier(taxonomy))
            )
        )
        thread.start()
        try:
            port = _wait_for_port(logs)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("POST", "/forms", LAMPADAIRE, JSON_HEADERS)
            reply = _reply(connection.getresponse())
            connection.close()
        finally:
            stop.set()
            thread.join(10)
        assert reply.status == 202
        [path] = _maildir_files(tmp_path / "maildir", "voirie")
        assert _request_id_of(path) == reply.document["request_id"]
        assert result == [exit_codes.OK]
        assert any(entry["event"] == "intake.http_stopped" for entry in logs)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

    def test_cannot_connect_to_broker(
        self,
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
        routing_config: RoutingConfig,
    ) -> None:
        """RabbitMQ mode with no broker answering returns the cannot-connect exit code."""
        broker = BrokerSettings(url="amqp://guest:guest@127.0.0.1:1/%2F", connect_timeout=0.5)
        settings = Settings(broker=broker, intake=IntakeSettings(http_port=0))
        configuration = self._configuration(settings, taxonomy, safety_rules, routing_config)
        assert run_http_intake(configuration, False, threading.Event()) == exit_codes.CANNOT_CONNECT

    def test_port_in_use_is_a_configuration_error(
        self,
        tmp_path: Path,
        taxonomy: Taxonomy,
        safety_rules: SafetyRules,
        routing_config: RoutingConfig,
    ) -> None:
        """A port another process listens on stops start-up with a ConfigError naming the key."""
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            port = blocker.getsockname()[1]
            intake = IntakeSettings(http_port=port)
            settings = Settings(state_dir=tmp_path, intake=intake)
            configuration = self._configuration(settings, taxonomy, safety_rules, routing_config)
            with pytest.raises(ConfigError) as caught:
                run_http_intake(configuration, True, classifier=KeywordClassifier(taxonomy))
        assert caught.value.key == "intake.http_port"
        assert f"127.0.0.1:{port}" in caught.value.problem
