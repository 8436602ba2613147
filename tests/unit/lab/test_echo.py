"""The lab's echo backend (hack/lab/echo.py) on loopback: it reports the address Envoy appended to
X-Forwarded-For over HTTP, the source of Envoy's PROXY v2 header before a passed-through TLS
connection, and closes a TLS connection that has no v2 header."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ECHO = Path(__file__).resolve().parents[3] / "hack" / "lab" / "echo.py"
V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HTTP_PORT, TLS_PORT = _free_port(), _free_port()


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    root = tmp_path_factory.mktemp("echo")
    argv = [sys.executable, str(ECHO), "--dir", str(root), "--address", "127.0.0.1"]
    proc = subprocess.Popen(argv + ["--http-port", str(HTTP_PORT), "--tls-port", str(TLS_PORT)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", TLS_PORT), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


def _http(request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=5) as s:
        s.sendall(request)
        return b"".join(iter(lambda: s.recv(4096), b""))


def _v2(source: str, dest: str) -> bytes:
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(dest)
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", 40000, 443)
    return V2 + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def _tls(prefix: bytes) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5) as raw:
        raw.sendall(prefix)
        with context.wrap_socket(raw, server_hostname="echo.lab.invalid") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
            return b"".join(iter(lambda: s.recv(4096), b""))


def test_http_answers_the_address_envoy_appended(echo) -> None:
    reply = _http(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.99, 198.51.100.7\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n198.51.100.7\n")
    assert _http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("source", ["198.51.100.7", "2001:db8:100::7"])
def test_tls_answers_the_proxy_v2_source(echo, source) -> None:
    dest = "10.0.0.9" if ":" not in source else "2001:db8::9"
    assert _tls(_v2(source, dest)).endswith(f"\r\n\r\n{source}\n".encode())


def test_tls_without_a_v2_header_is_closed(echo) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _tls(b"")
