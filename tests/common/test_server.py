"""The shared server bootstrap against real gRPC servers on ephemeral ports (no mocks).

The test service has no protos: a generic handler with raw-bytes messages. A request is a
command the handler acts on: b"echo:<text>", b"sleep:<s>", b"raise:<ErrorClass>", b"crash", b"abort",
b"unbuilt".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from workbench_runtime import errors
from services.common.channels import channel
from services.common.interceptors import STATUS_CODES, bearer_metadata
from services.common.logs import configure_logging
from services.common.server import ServiceServer
from services.common.settings import Settings

pytestmark = pytest.mark.timeout(60)

SERVICE = "test.v1.EchoService"
ROOT = Path(__file__).resolve().parents[2]
LEAK = "do-not-leak-this-detail"
TOKEN = "tok-3f9a1c2b7e"


def act(command: bytes, context: grpc.ServicerContext) -> bytes:
    verb, _, arg = command.decode().partition(":")
    if verb == "echo":
        return arg.encode()
    if verb == "sleep":
        time.sleep(float(arg))
        return b"slept"
    if verb == "raise":
        cls = getattr(errors, arg)
        if cls is errors.InvalidArgument:
            raise errors.InvalidArgument("name must not be empty", field="name", reason="EMPTY_NAME")
        if cls is errors.ResourceExhausted:
            raise errors.ResourceExhausted("queue full", retry_after_s=2.5)
        raise cls(f"{arg} happened")
    if verb == "crash":
        raise RuntimeError(LEAK)
    if verb == "abort":
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler said no")
    if verb == "unbuilt":  # what a generated servicer base-class method does
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")
    raise AssertionError(command)


def echo_stream(request, context):
    yield b"first"
    yield b"second"
    yield act(request, context)  # fails mid-stream after two messages


def collect(request_iterator, context):
    return act(list(request_iterator)[-1], context)


def chat(request_iterator, context):
    for request in request_iterator:
        yield act(request, context)


def register(server: grpc.Server) -> list[str]:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(act),
        "Stream": grpc.unary_stream_rpc_method_handler(echo_stream),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    return [SERVICE]


@pytest.fixture
def start():
    """start(**settings) -> (ServiceServer, address); every server is stopped at the end."""
    servers: list[ServiceServer] = []

    def _start(token: str | None = None, **overrides) -> tuple[ServiceServer, str]:
        settings = Settings(**{"listen": "127.0.0.1:0", "grace_seconds": 1.0, **overrides})
        server = ServiceServer("echo", settings, register, token=token)
        server.start()
        servers.append(server)
        return server, server.address

    yield _start
    for server in servers:  # bounded, so a shutdown bug fails the test instead of hanging the run
        stopper = threading.Thread(target=server.shutdown, kwargs={"grace": 0}, daemon=True)
        stopper.start()
        stopper.join(10)


@pytest.fixture
def dial():
    channels: list[grpc.Channel] = []

    def _dial(address: str, ch: grpc.Channel | None = None) -> grpc.Channel:
        channels.append(ch or grpc.insecure_channel(address))
        return channels[-1]

    yield _dial
    for ch in channels:
        ch.close()


def calls(ch: grpc.Channel):
    return {
        "Echo": ch.unary_unary(f"/{SERVICE}/Echo"),
        "Stream": ch.unary_stream(f"/{SERVICE}/Stream"),
        "Collect": ch.stream_unary(f"/{SERVICE}/Collect"),
        "Chat": ch.stream_stream(f"/{SERVICE}/Chat"),
    }


def health_check(ch: grpc.Channel, service: str = "", **kwargs) -> int:
    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5, **kwargs).status


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = fn(*args, timeout=5, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    return info.value


def detail(error: grpc.RpcError, message_type):
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    for item in status.details:
        message = message_type()
        if item.Unpack(message):
            return message
    return None


# -- reflection and health --------------------------------------------------------------------


def test_reflection_lists_registered_health_and_reflection(start, dial):
    _, address = start()
    stub = reflection_pb2_grpc.ServerReflectionStub(dial(address))
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for s in next(responses).list_services_response.service}
    assert names == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def test_health_serving_overall_and_per_service(start, dial):
    _, address = start()
    ch = dial(address)
    assert health_check(ch) == health_pb2.HealthCheckResponse.SERVING
    assert health_check(ch, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert rpc_error(health_pb2_grpc.HealthStub(ch).Check, health_pb2.HealthCheckRequest(service="nope")).code() \
        == grpc.StatusCode.NOT_FOUND


def test_shutdown_reports_not_serving_then_drains_in_flight_rpc(start, dial):
    server, address = start()
    ch = dial(address)
    watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = calls(ch)["Echo"].future(b"sleep:1.0", timeout=10)
    time.sleep(0.2)  # let the slow RPC reach its handler

    stopper = threading.Thread(target=server.shutdown, kwargs={"grace": 5.0})
    began = time.monotonic()
    stopper.start()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert stopper.is_alive(), "NOT_SERVING must be visible before the server is gone"
    assert list(watch) == [], "the Watch ends after NOT_SERVING so it does not hold the server for the grace"

    assert in_flight.result() == b"slept"
    stopper.join(5)
    assert not stopper.is_alive()
    assert time.monotonic() - began < 3.0, "shutdown should end when the in-flight RPC does, not at grace"
    # a new RPC is refused once stop() has begun
    assert rpc_error(calls(dial(address))["Echo"], b"echo:late").code() == grpc.StatusCode.UNAVAILABLE


def test_shutdown_while_watches_close_does_not_deadlock(start, dial):
    # grpc_health's own servicer hangs here on the first round (it sends under the lock that
    # a closing Watch's callback needs); ours must not
    for _ in range(10):
        server, address = start()
        stub = health_pb2_grpc.HealthStub(dial(address))
        watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(6)]
        for w in watches:
            next(w)
        flipper = threading.Thread(target=lambda: [server.health.set("", health_pb2.HealthCheckResponse.SERVING)
                                                   for _ in range(20)], daemon=True)
        flipper.start()
        for w in watches:
            w.cancel()
        stopper = threading.Thread(target=server.shutdown, kwargs={"grace": 0}, daemon=True)
        stopper.start()
        stopper.join(5)
        flipper.join(5)
        assert not stopper.is_alive() and not flipper.is_alive(), "health update deadlocked shutdown"


def test_health_watch_does_not_pin_worker_threads(start, dial):
    # the error interceptor must keep Watch non-blocking; a blocking Watch holds a thread per stream
    _, address = start(max_workers=2)
    ch = dial(address)
    watches = [health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=10) for _ in range(4)]
    assert all(next(w).status == health_pb2.HealthCheckResponse.SERVING for w in watches)
    assert calls(ch)["Echo"](b"echo:alive", timeout=3) == b"alive"
    for w in watches:
        w.cancel()


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize("error_class", sorted(STATUS_CODES, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_each_domain_error_maps_to_its_status(start, dial, error_class):
    _, address = start()
    error = rpc_error(calls(dial(address))["Echo"], f"raise:{error_class.__name__}".encode())
    assert error.code() == STATUS_CODES[error_class]
    assert error.code().name == {"InvalidArgument": "INVALID_ARGUMENT", "NotFound": "NOT_FOUND",
                                 "AlreadyExists": "ALREADY_EXISTS", "FailedPrecondition": "FAILED_PRECONDITION",
                                 "ResourceExhausted": "RESOURCE_EXHAUSTED", "Unavailable": "UNAVAILABLE",
                                 "Unauthenticated": "UNAUTHENTICATED", "PermissionDenied": "PERMISSION_DENIED",
                                 "Cancelled": "CANCELLED", "DeadlineExceeded": "DEADLINE_EXCEEDED",
                                 "Unimplemented": "UNIMPLEMENTED"}[error_class.__name__]
    assert rpc_status.from_call(error).message == error.details()


def test_invalid_argument_carries_field_violation_and_error_info(start, dial):
    _, address = start()
    error = rpc_error(calls(dial(address))["Echo"], b"raise:InvalidArgument")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "name must not be empty"
    bad_request = detail(error, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["name"]
    info = detail(error, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("EMPTY_NAME", "workbench")


def test_resource_exhausted_carries_retry_info(start, dial):
    _, address = start()
    error = rpc_error(calls(dial(address))["Echo"], b"raise:ResourceExhausted")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert detail(error, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() == 2500


def test_unexpected_exception_is_internal_without_trace(start, dial, caplog):
    _, address = start()
    error = rpc_error(calls(dial(address))["Echo"], b"crash")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details().startswith("internal error; see server logs, id=")
    wire = error.details() + repr(error.trailing_metadata())
    assert LEAK not in wire and "Traceback" not in wire and "RuntimeError" not in wire
    error_id = error.details().rpartition("id=")[2]
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
    assert logged and logged[0].exc_info[1].args == (LEAK,), "the trace belongs in the server log"


@pytest.mark.parametrize("method", ["Stream", "Collect", "Chat"])
@pytest.mark.parametrize("command, code", [(b"raise:NotFound", grpc.StatusCode.NOT_FOUND),
                                           (b"crash", grpc.StatusCode.INTERNAL),
                                           (b"abort", grpc.StatusCode.PERMISSION_DENIED)])
def test_streaming_handlers_map_errors(start, dial, method, command, code):
    _, address = start()
    call = calls(dial(address))[method]
    received = []
    with pytest.raises(grpc.RpcError) as info:
        if method == "Stream":
            received.extend(call(command, timeout=5))
        elif method == "Collect":
            call(iter([b"echo:a", command]), timeout=5)
        else:
            received.extend(call(iter([b"echo:a", b"echo:b", command]), timeout=5))
    assert info.value.code() == code
    assert LEAK not in info.value.details()
    if method == "Stream":
        assert received == [b"first", b"second"], "messages before the failure still arrive"
    if method == "Chat":
        assert received == [b"a", b"b"]


def test_handler_abort_passes_through_unchanged(start, dial):
    _, address = start()
    error = rpc_error(calls(dial(address))["Echo"], b"abort")
    assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, "handler said no")


def test_not_implemented_method_is_unimplemented(start, dial):
    _, address = start()
    error = rpc_error(calls(dial(address))["Echo"], b"unbuilt")
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/test.v1.EchoService/Echo" in error.details()


# -- auth -------------------------------------------------------------------------------------


def test_bearer_token_required_except_health_and_reflection(start, dial):
    _, address = start(token=TOKEN)
    ch = dial(address)
    echo, chat = calls(ch)["Echo"], calls(ch)["Chat"]

    missing = rpc_error(echo, b"echo:hi")
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in missing.details()
    wrong = rpc_error(echo, b"echo:hi", metadata=bearer_metadata("tok-wrong"))
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rpc_error(chat, iter([b"echo:hi"])).code() == grpc.StatusCode.UNAUTHENTICATED
    unknown = ch.unary_unary(f"/{SERVICE}/NoSuchMethod")
    assert rpc_error(unknown, b"x").code() == grpc.StatusCode.UNAUTHENTICATED

    assert echo(b"echo:hi", metadata=bearer_metadata(TOKEN), timeout=5) == b"hi"
    assert health_check(ch) == health_pb2.HealthCheckResponse.SERVING  # probes need no token
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert reply.HasField("list_services_response")

    # channel() adds the header to every call, streaming included
    with channel(address, Settings(), token=TOKEN) as authed:
        assert calls(authed)["Echo"](b"echo:ok", timeout=5) == b"ok"
        assert list(calls(authed)["Chat"](iter([b"echo:x", b"echo:y"]), timeout=5)) == [b"x", b"y"]


def test_default_token_is_internal_token_for_workers(start, dial):
    _, address = start(internal_token=TOKEN, auth_token="tok-other")
    echo = calls(dial(address))["Echo"]
    assert rpc_error(echo, b"echo:hi", metadata=bearer_metadata("tok-other")).code() == grpc.StatusCode.UNAUTHENTICATED
    assert echo(b"echo:hi", metadata=bearer_metadata(TOKEN), timeout=5) == b"hi"


# -- TLS --------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A throwaway CA, a server cert for localhost/127.0.0.1 and a client cert, all EC P-256."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=workbench-test-ca", cwd=d)
    for name, ext in [("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")]:
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)
    return d


def test_tls(start, dial, certs):
    _, address = start(tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key"))
    client = Settings(tls_ca=str(certs / "ca.pem"))
    assert calls(dial(address, channel(address, client)))["Echo"](b"echo:secure", timeout=5) == b"secure"
    # a plaintext client cannot talk to a TLS server
    assert rpc_error(calls(dial(address))["Echo"], b"echo:x").code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_client_without_cert(start, dial, certs):
    _, address = start(tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key"),
                       tls_client_ca=str(certs / "ca.pem"))
    anonymous = channel(address, Settings(tls_ca=str(certs / "ca.pem")))
    # the handshake fails every time: UNAVAILABLE, or the deadline when the channel's retries outlast it
    refused = rpc_error(calls(dial(address, anonymous))["Echo"], b"echo:x").code()
    assert refused in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    with_cert = channel(address, Settings(tls_ca=str(certs / "ca.pem"), tls_cert=str(certs / "client.pem"),
                                          tls_key=str(certs / "client.key")))
    assert calls(dial(address, with_cert))["Echo"](b"echo:mutual", timeout=5) == b"mutual"


# -- limits, binding, logging, process --------------------------------------------------------


def test_max_message_size_enforced(start, dial):
    _, address = start(max_message_bytes=1024)
    echo = calls(dial(address))["Echo"]
    assert echo(b"echo:" + b"a" * 500, timeout=5) == b"a" * 500
    assert rpc_error(echo, b"echo:" + b"a" * 4096).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_port_in_use_fails_loudly(start):
    _, address = start()
    with pytest.raises(OSError):
        ServiceServer("echo", Settings(listen=address), register).start()


def test_logs_json_and_text_never_show_secrets(capsys):
    settings = Settings(auth_token=TOKEN, s3_secret_key="s3-very-secret", log_format="json")
    try:
        log = configure_logging(settings, "echo")
        log.info("dialing with %s", TOKEN, extra={"job_id": "j1", "api_token": "anything"})
        entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert entry["service"] == "echo" and entry["level"] == "INFO" and entry["job_id"] == "j1"
        assert {"ts", "logger", "msg"} <= set(entry)
        assert TOKEN not in json.dumps(entry) and entry["api_token"] == "[REDACTED]"

        configure_logging(Settings(s3_secret_key="s3-very-secret", log_format="text"), "echo")
        logging.getLogger("x").warning("key s3-very-secret", extra={"job_id": "j2"})
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert "WARNING" in line and "job_id=j2" in line and "s3-very-secret" not in line
    finally:
        from services.common import logs
        logging.getLogger().removeHandler(logs._handler)
        logs._handler = None


SERVER_SCRIPT = f"""
import grpc
from services.common.logs import configure_logging
from services.common.server import serve
from services.common.settings import Settings
from tests.common.test_server import register
settings = Settings(listen="127.0.0.1:0", internal_token={TOKEN!r}, grace_seconds=5)
configure_logging(settings, "echo")
serve("echo", settings, register)
"""


def test_sigterm_stops_a_real_process_with_exit_0():
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        lines = []
        for line in proc.stderr:  # the startup log line carries the bound port
            lines.append(line)
            entry = json.loads(line)
            if "port" in entry:
                break
        with grpc.insecure_channel(f"127.0.0.1:{entry['port']}") as ch:
            assert health_check(ch) == health_pb2.HealthCheckResponse.SERVING
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - began < 3
        output = "".join(lines) + proc.stderr.read()
        assert "shutting down" in output and TOKEN not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
