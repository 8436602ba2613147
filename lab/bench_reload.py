"""Numbers, not pass/fail: requests lost while HAProxy reloads (USR2) versus restarts, under load.

Runs against a lab whose stack is up (`make lab`). Each round: a bounded load from a visitor
(a new connection per request), three reloads or three restarts of the host's HAProxy 3 s
apart. A restart is stop + start, what `systemctl restart` does; the stack's reload is USR2
to the master (source_ip_edge/render/haproxy_host/scripts.py). Usage: python -m lab.bench_reload [LAB_NAME]
"""

from __future__ import annotations

import sys
import time

from lab.labkit import Lab, load_result

RELOAD = "kill -USR2 $(cat /run/haproxy.pid)"
RESTART = (
    "pid=$(cat /run/haproxy.pid); kill -TERM $pid; while kill -0 $pid 2>/dev/null; do sleep 0.05; done; "
    "haproxy -W -D -p /run/haproxy.pid -f /etc/haproxy/haproxy.cfg"
)


def round_under_load(lab: Lab, action: str, times: int = 3) -> dict:
    visitor = lab.visitors[0]
    load = lab.start_load(visitor, "http", seconds=4 + 3 * times, max_requests=200_000, concurrency=3)
    try:
        time.sleep(2)
        for _ in range(times):
            result = lab.ssh(action)
            if result.returncode != 0:
                raise RuntimeError(result.stderr)
            time.sleep(3)
    finally:
        counts = load_result(load, timeout=60)
    return counts


def main(name: str) -> int:
    lab = Lab.load(name)
    if lab.master_pid() is None:
        print("no HAProxy master on the lab host: run `make lab` first", file=sys.stderr)
        return 1
    for label, action in (("3 reloads (USR2)", RELOAD), ("3 restarts", RESTART)):
        counts = round_under_load(lab, action)
        print(f"{label:18} {counts['requests']:>7} requests, {counts['failed']:>5} failed  {counts['failures']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "lab"))
