"""The lab's echo backend: the process of the echo Deployment's pods (hack/lab/app.sh), which answer
each request with the visitor's address as the backend sees it.

- HTTP on 8080: the gateway's Envoy forwards the request with X-Forwarded-For; the address Envoy
  appended last is the downstream remote address it saw (with `xff_num_trusted_hops` 0, the address
  the PROXY header carried). The body is that address; `/healthz` answers the readiness probe.
- TLS on 8443, passed through the gateway untouched: Envoy's TCP proxy sends a PROXY v2 header first
  (the DestinationRule's `proxyProtocol`), then the visitor's TLS bytes. A connection without a valid
  v2 header is closed. The body is the header's source address.

Usage: python echo.py --dir POD_ROOT   (a self-signed certificate is made there)
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import ssl
import struct
import subprocess
from pathlib import Path

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def answer(status: str, body: str) -> bytes:
    data = body.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
        "X-Lab-Backend: echo\r\n\r\n"
    ).encode() + data


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request, headers = await read_request(reader)
        path = request.split(" ")[1] if " " in request else "/"
        if path == "/healthz":
            writer.write(answer("200 OK", "ok\n"))
        else:
            xff = [a.strip() for a in headers.get("x-forwarded-for", "").split(",") if a.strip()]
            writer.write(answer("200 OK", (xff[-1] if xff else "no X-Forwarded-For") + "\n"))
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


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


async def tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
    try:
        header = await asyncio.wait_for(reader.readexactly(16), timeout=10)
        if header[:12] != V2_SIGNATURE:
            return
        (length,) = struct.unpack("!H", header[14:16])
        source = proxy_v2_source(header, await reader.readexactly(length))
        await writer.start_tls(context)
        await read_request(reader)
        writer.write(answer("200 OK", source + "\n"))
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
        pass
    except ssl.SSLError:
        pass
    finally:
        writer.close()


async def serve(root: Path) -> None:
    key, cert = root / "tls.key", root / "tls.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-days", "30", "-subj", "/CN=echo.lab.invalid", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    plain = await asyncio.start_server(http, "0.0.0.0", 8080)
    secure = await asyncio.start_server(lambda r, w: tls(r, w, context), "0.0.0.0", 8443)
    async with plain, secure:
        await asyncio.gather(plain.serve_forever(), secure.serve_forever())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, type=Path)
    asyncio.run(serve(parser.parse_args().dir))


if __name__ == "__main__":
    main()
