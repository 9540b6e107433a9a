"""`triage intake http`: e-forms POSTed by the commune's website, validated, then handed on.

A small threaded HTTP server (the standard library's) answers `POST /forms` with 202 once the
form is valid and handed on, and `GET /healthz`. Handing on is a `Publish` callable, so the
server knows neither pika nor the model: `broker_publisher` publishes the exact bytes to the
intake exchange with confirms, `pipeline_publisher` runs them through the embedded pipeline.
Everything that can be refused from the headers (path, method, token, type, size) is refused
before the body is read; a body that does not validate gets the field named. Logs hold the
request id, the status and the field name, never the body, a submitted value or the client.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import structlog

from classifiers import Classifier
from worker import exit_codes
from worker.broker import Broker, Topology
from worker.config import IntakeSettings
from worker.daemon import install_stop_signals
from worker.errors import ConfigError, ParseError, PermanentError, TransientError
from worker.intake_sinks import publish_intake
from worker.parsing import ParseLimits, load_eform
from worker.pipeline import Pipeline, Status
from worker.rabbitmq import RabbitBroker
from worker.request import CONTENT_TYPES, Channel, RawRequest, request_id
from worker.routing import queue_departments
from worker.runtime import Configuration, build_pipeline, topology_of

log = structlog.get_logger("worker.intake_http")

Publish = Callable[[bytes, str], None]
"""Hand on a valid form's exact bytes under its request id; raise `DeliveryError` if not done."""

FORMS_PATHS = ("/forms", "/forms/")
HEALTH_PATH = "/healthz"
TOKEN_HEADER = "X-Triage-Token"
JSON_TYPE = CONTENT_TYPES[Channel.FORM]
SOCKET_TIMEOUT = 30.0  # a client stalling mid-request must not hold a thread, nor the shutdown
RETRY_AFTER_SECONDS = 30
POLL_SECONDS = 0.1  # how long `shutdown()` may wait for the serving loop to notice
_ALLOWED = {**dict.fromkeys(FORMS_PATHS, ("POST",)), HEALTH_PATH: ("GET", "HEAD")}


class NotHandedOnError(TransientError):
    """The form was neither handed on nor set aside; the client may send it again (503)."""


class SetAsideError(PermanentError):
    """The embedded pipeline dead-lettered the form: kept for an agent, not routed (500)."""


@dataclass(frozen=True)
class _Answer:
    status: int
    document: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: HTTPStatus, message: str, **headers: str) -> _Answer:
    return _Answer(status, {"error": message}, headers)


def _is_json_utf8(value: str | None) -> bool:
    """`application/json`, with no charset or UTF-8's (RFC 8259 JSON is UTF-8)."""
    if not value:
        return False
    kind, *parameters = value.split(";")
    if kind.strip().lower() != JSON_TYPE:
        return False
    for parameter in parameters:
        name, _, setting = parameter.partition("=")
        charset = setting.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in {"utf-8", "utf8"}:
            return False
    return True


def make_handler(
    publish: Publish,
    settings: IntakeSettings,
    *,
    limits: ParseLimits | None = None,
    healthy: Callable[[], bool] | None = None,
) -> type[BaseHTTPRequestHandler]:
    """The request handler class of the intake server, around `publish` and the settings."""
    limits = limits or ParseLimits()
    # A body past the parser's own limit would be read only to be refused: refuse it unread.
    max_bytes = min(settings.http_max_bytes, limits.max_form_bytes)
    secret = settings.http_token.get_secret_value() if settings.http_token is not None else ""
    token = secret.encode("utf-8") or None
    is_healthy = healthy or (lambda: True)

    class IntakeHandler(BaseHTTPRequestHandler):
        # HTTP/1.1 for `Expect: 100-continue`, so a refused client need not send its body at
        # all; every answer still closes the connection, so no idle keep-alive holds a thread.
        protocol_version = "HTTP/1.1"
        server_version = "triage-intake"
        timeout = SOCKET_TIMEOUT
        body_length = 0

        def do_GET(self) -> None:
            self._dispatch()

        def do_HEAD(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def do_PUT(self) -> None:
            self._dispatch()

        def do_PATCH(self) -> None:
            self._dispatch()

        def do_DELETE(self) -> None:
            self._dispatch()

        def do_OPTIONS(self) -> None:
            self._dispatch()

        def version_string(self) -> str:
            return self.server_version  # not the Python version

        def handle_expect_100(self) -> bool:
            answer = self._check_headers()
            if answer is not None:
                self._send(answer)
                return False
            return super().handle_expect_100()

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # The base class's own refusals (bad request line, headers too long) in JSON too.
            self._send(_Answer(code, {"error": message or HTTPStatus(code).phrase}))

        def log_message(self, format: str, *args: object) -> None:
            return  # the default access line holds the client's address and the full path

        def _dispatch(self) -> None:
            answer = self._check_headers()
            if answer is None:
                if urlsplit(self.path).path == HEALTH_PATH:
                    ok = is_healthy()
                    status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                    answer = _Answer(status, {"ok": ok})
                else:
                    answer = self._receive_form()
            self._send(answer)

        def _check_headers(self) -> _Answer | None:
            """The refusal that the request line and headers alone decide, if any."""
            allowed = _ALLOWED.get(urlsplit(self.path).path)
            answer: _Answer | None = None
            if allowed is None:
                answer = _error(HTTPStatus.NOT_FOUND, "not found")
            elif self.command not in allowed:
                answer = _error(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"method {self.command} not allowed",
                    Allow=", ".join(allowed),
                )
            elif self.command == "POST":
                answer = self._check_form_headers()
            if answer is not None:
                log.info(
                    "intake.request_refused",
                    status=int(answer.status),
                    error=answer.document["error"],
                )
            return answer

        def _check_form_headers(self) -> _Answer | None:
            if token is not None:
                # Header values arrive decoded as Latin-1: encoding back gives the bytes sent.
                offered = self.headers.get(TOKEN_HEADER, "").encode("latin-1", "replace")
                if not hmac.compare_digest(offered, token):
                    return _error(
                        HTTPStatus.UNAUTHORIZED,
                        f"missing or wrong {TOKEN_HEADER}",
                        **{"WWW-Authenticate": f'{TOKEN_HEADER} realm="triage-intake"'},
                    )
            if not _is_json_utf8(self.headers.get("Content-Type")):
                return _error(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"expected Content-Type {JSON_TYPE} (UTF-8)"
                )
            lengths = set(self.headers.get_all("Content-Length") or [])
            if "Transfer-Encoding" in self.headers or not lengths:
                return _error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            value = lengths.pop()
            if lengths or not (value.isascii() and value.isdigit()):
                return _error(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
            self.body_length = int(value)
            if self.body_length > max_bytes:
                return _error(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"body of {self.body_length} bytes exceeds the limit of {max_bytes}",
                )
            return None

        def _receive_form(self) -> _Answer:
            try:
                body = self.rfile.read(self.body_length)
            except TimeoutError:
                log.info("intake.request_refused", status=int(HTTPStatus.REQUEST_TIMEOUT))
                return _error(HTTPStatus.REQUEST_TIMEOUT, "timed out reading the body")
            if len(body) < self.body_length:
                log.info("intake.request_refused", status=int(HTTPStatus.BAD_REQUEST))
                return _error(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
            rid = request_id(Channel.FORM, content=body)
            try:
                load_eform(body, limits)
            except ParseError as exc:
                # A named field is a valid document with a wrong value; without one, the body
                # is not a JSON object at all (empty, not UTF-8, not JSON, an array).
                status = HTTPStatus.UNPROCESSABLE_ENTITY if exc.field else HTTPStatus.BAD_REQUEST
                log.info(
                    "intake.form_refused",
                    request_id=rid,
                    status=int(status),
                    field=exc.field,
                    reason=exc.reason,
                )
                return _Answer(status, {"error": exc.reason, "field": exc.field})
            return self._hand_on(body, rid)

        def _hand_on(self, body: bytes, rid: str) -> _Answer:
            try:
                publish(body, rid)
            except TransientError as exc:
                status, message = HTTPStatus.SERVICE_UNAVAILABLE, "not accepted, try again later"
                headers, error_class = {"Retry-After": str(RETRY_AFTER_SECONDS)}, type(exc).__name__
            except SetAsideError as exc:
                status, message = HTTPStatus.INTERNAL_SERVER_ERROR, "not routed: kept for an agent"
                headers, error_class = {}, type(exc).__name__
            except Exception as exc:  # a permanent or unforeseen failure still gets an answer
                status, message = HTTPStatus.INTERNAL_SERVER_ERROR, "not accepted: server error"
                headers, error_class = {}, type(exc).__name__
            else:
                log.info("intake.form_accepted", request_id=rid, status=int(HTTPStatus.ACCEPTED))
                return _Answer(HTTPStatus.ACCEPTED, {"request_id": rid})
            log.warning(
                "intake.form_not_accepted",
                request_id=rid,
                status=int(status),
                error_class=error_class,
            )
            return _Answer(status, {"error": message, "request_id": rid}, headers)

        def _send(self, answer: _Answer) -> None:
            body = json.dumps(answer.document, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", f"{JSON_TYPE}; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
            except OSError as exc:
                log.info(
                    "intake.client_gone", status=int(answer.status), error_class=type(exc).__name__
                )
                self.close_connection = True

    return IntakeHandler


def serve_http_intake(
    publish: Publish,
    settings: IntakeSettings,
    *,
    limits: ParseLimits | None = None,
    healthy: Callable[[], bool] | None = None,
) -> ThreadingHTTPServer:
    """Listen on `http_host:http_port` (0: a free port) on a daemon thread; returns the server.

    Stop it with `shutdown()`, then `server_close()`, which waits for the requests in hand.
    """
    handler = make_handler(publish, settings, limits=limits, healthy=healthy)
    server = ThreadingHTTPServer((settings.http_host, settings.http_port), handler)
    threading.Thread(
        target=server.serve_forever, args=(POLL_SECONDS,), name="intake-http", daemon=True
    ).start()
    return server


def broker_publisher(broker: Broker, topology: Topology) -> Publish:
    """Publish to the intake exchange, as `triage submit` does; returns once confirmed."""

    def publish(body: bytes, rid: str) -> None:
        raw = RawRequest(payload=body, channel=Channel.FORM, origin="http:/forms")
        publish_intake(broker, topology, raw, rid)

    return publish


def pipeline_publisher(pipeline: Pipeline) -> Publish:
    """Run each form through the embedded pipeline; a form it could not route is an error."""
    lock = threading.Lock()

    def publish(body: bytes, rid: str) -> None:
        raw = RawRequest(payload=body, channel=Channel.FORM, origin="http:/forms")
        with lock:  # one model call at a time: the embedded mode serves a trickle of forms
            [outcome] = pipeline.process([raw])
        if outcome.status is Status.DEAD_LETTER:
            raise SetAsideError(f"request {outcome.request_id} was dead-lettered")
        if outcome.status is Status.FAILED:
            raise NotHandedOnError(f"request {outcome.request_id} was neither routed nor kept")

    return publish


def run_http_intake(
    configuration: Configuration,
    embedded: bool,
    stop: threading.Event | None = None,
    *,
    classifier: Classifier | None = None,
) -> int:
    """Serve the e-form intake until `stop` is set or SIGTERM/SIGINT; returns an exit code.

    Embedded: each form runs through the local pipeline (the model is loaded unless
    `classifier` is given). Otherwise forms are published to RabbitMQ's intake exchange.
    """
    settings = configuration.settings
    intake = settings.intake
    broker: RabbitBroker | None = None
    healthy: Callable[[], bool] | None = None
    if embedded:
        publish = pipeline_publisher(build_pipeline(configuration, classifier=classifier))
    else:
        topology = topology_of(settings)
        broker = RabbitBroker(settings.broker, topology, queue_departments(configuration.routing))
        if not broker.start(wait=settings.broker.connect_timeout):
            log.error("intake.cannot_connect", timeout=settings.broker.connect_timeout)
            broker.close()
            return exit_codes.CANNOT_CONNECT
        publish = broker_publisher(broker, topology)
        healthy = broker.connected.is_set
    try:
        server = serve_http_intake(publish, intake, limits=settings.limits, healthy=healthy)
    except OSError as exc:
        if broker is not None:
            broker.close()
        problem = f"cannot listen on {intake.http_host}:{intake.http_port} ({exc.strerror or exc})"
        raise ConfigError("settings", "intake.http_port", problem) from exc
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_signals(stop)
    log.info(
        "intake.http_ready",
        host=intake.http_host,
        port=server.server_address[1],
        mode="embedded" if embedded else "rabbitmq",
        token_required=bool(intake.http_token and intake.http_token.get_secret_value()),
    )
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()  # waits for the requests in hand, so none loses its publish
    if broker is not None:
        broker.close()
    log.info("intake.http_stopped")
    return exit_codes.OK
