"""A request handler base for the unit tests' fake Kubernetes API servers: JSON answers, no log."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


class JsonApiHandler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass
