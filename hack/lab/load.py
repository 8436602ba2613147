"""A bounded HTTP(S) load for the lab, run inside a visitor's network namespace.

Each request opens a new connection (`Connection: close`), so the load keeps
exercising HAProxy's listening sockets while it reloads. Stops after --seconds
or --max-requests, whichever comes first, or on SIGTERM (requests under way
finish), and prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import ssl
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--expect", required=True, help="the body each answer must carry")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    if args.seconds > 120 or args.max_requests > 1_000_000:
        parser.error("the lab's load is bounded: at most 120 s and 1,000,000 requests")

    url = urlsplit(args.url)
    context = ssl._create_unverified_context() if url.scheme == "https" else None  # lab's self-signed cert
    deadline = time.monotonic() + args.seconds
    lock = threading.Lock()
    counts: Counter[str] = Counter()
    budget = [args.max_requests]
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())

    def take() -> bool:
        with lock:
            if budget[0] <= 0 or time.monotonic() >= deadline or stopped.is_set():
                return False
            budget[0] -= 1
            return True

    def worker() -> None:
        while take():
            try:
                if context:
                    conn = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=5, context=context)
                else:
                    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=5)
                conn.request("GET", url.path or "/", headers={"Connection": "close"})
                response = conn.getresponse()
                body = response.read().decode().strip()
                conn.close()
                outcome = (
                    "ok"
                    if response.status == 200 and body == args.expect
                    else f"wrong answer {response.status} {body!r}"
                )
            except Exception as error:  # every failure is counted, by kind
                outcome = type(error).__name__
            with lock:
                counts[outcome] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    print(
        json.dumps(
            {
                "requests": total,
                "ok": counts["ok"],
                "failed": total - counts["ok"],
                "failures": {k: v for k, v in counts.items() if k != "ok"},
                "seconds": round(elapsed, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
