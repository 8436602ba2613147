"""The lab's gateway stand-in keeps its contract (docs/stand-ins.md): it is at least as strict as
the Istio gateway's Envoy wherever the edge depends on it. Run on loopback from the same generated
nginx.conf the lab uses (hack/lab/gateway-standin-conf.sh)."""

from __future__ import annotations

import socket
import ssl
import struct

import pytest

from tests.unit.gateway_standin import Standin, start_standins

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
VISITOR = "198.51.100.7"


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Standin:
    (started,) = start_standins(tmp_path_factory.mktemp("standin"), ["127.0.0.1"])
    yield started
    started.stop()


def _proxy_v2(source: str, destination_port: int) -> bytes:
    """A PROXY protocol v2 header (PROXY command, TCP over IPv4), as HAProxy's send-proxy-v2 sends."""
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, destination_port)
    return PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def _exchange(port: int, data: bytes, tls_after: bytes | None = None) -> bytes:
    """Sends `data` (then, with tls_after, a TLS handshake and that request) and reads until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if tls_after is None:
            return _read_all(sock)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the stand-in's certificate is self-signed
        with context.wrap_socket(sock) as tls:
            tls.sendall(tls_after)
            return _read_all(tls)


def _read_all(sock) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _status(response: bytes) -> int | None:
    line = response.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[0].startswith(b"HTTP/") else None


def _get(version: str, host: str | None = "gateway") -> bytes:
    headers = (f"Host: {host}\r\n" if host is not None else "") + "Connection: close\r\n"
    return f"GET /healthz/ready {version}\r\n{headers}\r\n".encode()


def test_status_port_answers_http11_with_host_200(standin):
    response = _exchange(standin.ports.status, _get("HTTP/1.1"))
    assert _status(response) == 200, response


def test_status_port_answers_http10_with_426_like_envoy_without_accept_http_10(standin):
    # istio/istio#23411: Envoy's HTTP/1 codec answers HTTP/1.0 with 426 Upgrade Required.
    assert _status(_exchange(standin.ports.status, _get("HTTP/1.0"))) == 426
    assert _status(_exchange(standin.ports.status, _get("HTTP/1.0", host=None))) == 426


def test_status_port_answers_http11_without_host_with_400(standin):
    # envoyproxy/envoy#4827.
    assert _status(_exchange(standin.ports.status, _get("HTTP/1.1", host=None))) == 400


def test_status_port_routes_only_healthz_ready(standin):
    request = b"GET /stats HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"
    assert _status(_exchange(standin.ports.status, request)) == 404


def test_status_port_refuses_a_proxy_header(standin):
    # The bootstrap status listener has no proxy_protocol filter (native mode adds a lenient one,
    # which also takes a check without a header): a check must not send one.
    response = _exchange(standin.ports.status, _proxy_v2(VISITOR, standin.ports.status) + _get("HTTP/1.1"))
    assert _status(response) == 400


@pytest.mark.parametrize("port_name", ["http", "https"])
def test_strict_proxy_listener_closes_a_connection_without_a_proxy_header(standin, port_name):
    port = getattr(standin.ports, port_name)
    # Plain HTTP, or a TLS ClientHello, where the PROXY header should be: closed with no reply.
    first_bytes = _get("HTTP/1.1") if port_name == "http" else b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"
    assert _exchange(port, first_bytes) == b""


def test_strict_proxy_listener_reports_the_address_from_the_proxy_header(standin):
    response = _exchange(standin.ports.http, _proxy_v2(VISITOR, standin.ports.http) + _get("HTTP/1.1"))
    assert _status(response) == 200 and response.endswith(f"{VISITOR}\n".encode()), response
    response = _exchange(standin.ports.https, _proxy_v2(VISITOR, standin.ports.https), tls_after=_get("HTTP/1.1"))
    assert _status(response) == 200 and response.endswith(f"{VISITOR}\n".encode()), response
