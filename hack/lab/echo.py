"""The lab's echo backend: the process of the echo Deployment's pods (hack/lab/app.sh), which answer
each request with the visitor's address as the backend sees it.

- HTTP on 8080: the gateway's Envoy forwards the request with X-Forwarded-For; the address Envoy
  appended last is the downstream remote address it saw (with `xff_num_trusted_hops` 0, the address
  the PROXY header carried). The body is that address; `/healthz` answers the readiness probe.
- TLS on 8443, passed through the gateway untouched: Envoy's TCP proxy sends a PROXY v2 header first
  (the DestinationRule's `proxyProtocol`), then the visitor's TLS bytes. A connection without a valid
  v2 header is closed. The body is the header's source address.

Usage: python echo.py --dir POD_ROOT [--address A --http-port P --tls-port P]   (a self-signed certificate
is made in POD_ROOT)
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
from pathlib import Path

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
TIMEOUT = 10


def answer(status: str, body: str) -> bytes:
    data = body.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
        "X-Lab-Backend: echo\r\n\r\n"
    ).encode() + data


def read_request(conn: socket.socket) -> tuple[str, dict[str, str]]:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk or len(head) > 65536:
            raise ConnectionError("no complete request head")
        head += chunk
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))  # never more than asked: what follows stays for TLS
        if not chunk:
            raise ConnectionError("closed inside the PROXY header")
        data += chunk
    return data


def proxy_v2_source(header: bytes, body: bytes) -> str:
    """The source address of a PROXY v2 header (PROXY command, TCP over IPv4 or IPv6)."""
    version_command, family = header[12], header[13]
    if version_command != 0x21:
        raise ValueError(f"not a v2 PROXY command: {version_command:#x}")
    if family == 0x11:
        return str(ipaddress.IPv4Address(body[:4]))
    if family == 0x21:
        return str(ipaddress.IPv6Address(body[:16]))
    raise ValueError(f"address family {family:#x}")


class Plain(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(TIMEOUT)
        try:
            request, headers = read_request(self.request)
            path = request.split(" ")[1] if request.count(" ") >= 2 else "/"
            if path == "/healthz":
                self.request.sendall(answer("200 OK", "ok\n"))
                return
            xff = [a.strip() for a in headers.get("x-forwarded-for", "").split(",") if a.strip()]
            self.request.sendall(answer("200 OK", (xff[-1] if xff else "no X-Forwarded-For") + "\n"))
        except (OSError, ConnectionError):
            pass


class Passthrough(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(TIMEOUT)
        try:
            header = read_exactly(self.request, 16)
            if header[:12] != V2_SIGNATURE:
                return
            (length,) = struct.unpack("!H", header[14:16])
            source = proxy_v2_source(header, read_exactly(self.request, length))
            with self.server.context.wrap_socket(self.request, server_side=True) as tls:
                read_request(tls)
                tls.sendall(answer("200 OK", source + "\n"))
        except (OSError, ConnectionError, ValueError):
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    context: ssl.SSLContext


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--address", default="0.0.0.0")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--tls-port", type=int, default=8443)
    args = parser.parse_args()
    root = args.dir
    key, cert = root / "tls.key", root / "tls.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-days", "30", "-subj", "/CN=echo.lab.invalid", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    plain = Server((args.address, args.http_port), Plain)
    secure = Server((args.address, args.tls_port), Passthrough)
    secure.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    secure.context.load_cert_chain(cert, key)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    secure.serve_forever()


if __name__ == "__main__":
    main()
