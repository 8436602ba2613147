"""Numbers, not pass/fail: requests lost while HAProxy reloads (seamless, USR2) versus restarts, under load.

Runs against a lab whose stack is up (`make lab`). Each round: a bounded load from a visitor
(a new connection per request), three reloads or three restarts of the host's HAProxy 3 s
apart. The lab's host boots systemd, so these are `systemctl reload haproxy` (Debian's unit:
`haproxy -c`, then USR2 to the master) and `systemctl restart haproxy` (stop + start); on a
host without systemd, USR2 to the master and a stop + start of the master-worker daemon.
Usage: python -m hack.lab.bench_reload [LAB_NAME]
"""

from __future__ import annotations

import sys
import time

from hack.lab.labkit import Lab, load_result

RELOAD = "if [ -d /run/systemd/system ]; then systemctl reload haproxy; else kill -USR2 $(cat /run/haproxy.pid); fi"
RESTART = (
    "if [ -d /run/systemd/system ]; then systemctl restart haproxy; else "
    "pid=$(cat /run/haproxy.pid); kill -TERM $pid; while kill -0 $pid 2>/dev/null; do sleep 0.05; done; "
    "haproxy -W -D -p /run/haproxy.pid -f /etc/haproxy/haproxy.cfg; fi"
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
    for label, action in (("3 reloads", RELOAD), ("3 restarts", RESTART)):
        counts = round_under_load(lab, action)
        print(f"{label:18} {counts['requests']:>7} requests, {counts['failed']:>5} failed  {counts['failures']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "lab"))
