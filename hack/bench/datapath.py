"""Data path: requests/s and p50/p99 latency of a visitor through HAProxy (the project's rendered
haproxy.cfg, run natively in a network namespace) to the gateway stand-in, beside the same visitor
routed by the kernel to the same kind of server (the limit) and through nginx's stream module with
`proxy_protocol on` (what users pick instead). Keep-alive and a new connection per request.

    visitor 198.51.100.107 ── router ── edge 203.0.113.110: HAProxy :80, nginx stream :8080
                                  └──── gateway 192.0.2.150: stand-in :30080 (PROXY), plain :8080

Every comparison is measured in one run, interleaved (the order rotates each run), each figure the
median of --runs runs of wrk (`-d` seconds and a request cap per thread: every load stops by itself).
Needs root (ip netns), haproxy, nginx with its stream module (libnginx-mod-stream) and wrk.

    python -m hack.bench.datapath [--runs 3] [--seconds 5] [--variant NAME ...] [--json FILE]

--variant compares the rendered haproxy.cfg with that change to global/defaults (tuning trials).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import parse_stack_config
from components.haproxy_host.haproxy_cfg import ADMIN_SOCKET, SERVER_STATE_FILE, render_haproxy_config
from hack.bench.figures import median, parse_wrk, summarize, table
from hack.bench.netns import BenchNamespaces, exit_on_sigterm, wait_until

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("LAB_RUN_BASE", "/run/source-ip-edge")) / (
    "bench-" + hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
)
LUA = Path(__file__).with_name("bounded.lua")
STANDIN_CONF = REPO / "hack" / "lab" / "gateway-standin-conf.sh"
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

VISITOR, EDGE, GATEWAY = "198.51.100.107", "203.0.113.110", "192.0.2.150"
LINKS = {"v": (VISITOR, "198.51.100.1"), "edge": (EDGE, "203.0.113.1"), "gw": (GATEWAY, "192.0.2.1")}
NODE_PORTS = {"http": 30080, "https": 30443, "status": 30021}
PLAIN_PORT = 8080  # the stand-in's twin without PROXY, for the kernel-routed path
NGINX_STREAM_PORT = 8080  # on the edge, beside HAProxy's :80

# The bench stack: one HAProxy host, one gateway node; everything else the schema's defaults.
BENCH_STACK = {
    "haproxy": {"hosts": [{"name": "bench-edge", "address": EDGE, "insecureIgnoreHostKey": True}]},
    "gateway": {"nodes": [GATEWAY], "nodePorts": NODE_PORTS},
    "istio": {"install": False},
}

MODES = {"keep-alive": [], "close": ["-H", "Connection: close"]}
WRK_THREADS, WRK_CONNECTIONS = 1, 32
MAX_REQUESTS_PER_THREAD = 2_000_000

# Tuning trials (--variant): lines added to the rendered global or defaults section.
VARIANTS: dict[str, dict[str, list[str]]] = {
    "splice-auto": {"defaults": ["option splice-auto"]},
    "tcp-smart-connect": {"defaults": ["option tcp-smart-connect"]},
    "tcp-smart-accept": {"defaults": ["option tcp-smart-accept"]},
    "nbthread-1": {"global": ["nbthread 1"]},
    "bufsize-32k": {"global": ["tune.bufsize 32768"]},
    "maxaccept-256": {"global": ["tune.maxaccept 256"]},
    "no-log": {"defaults": ["no log"]},  # diagnostic only: what logging costs
    "low-latency": {"global": ["tune.sched.low-latency on"]},
}


def rendered_config() -> str:
    return render_haproxy_config(parse_stack_config(BENCH_STACK))


def for_namespace(cfg: str, run_dir: Path) -> str:
    """The rendered haproxy.cfg, changed only where a native run in a bench namespace must differ from
    a host's: the runtime API socket and the server-state file go to the bench's own directory (a
    host's /run/haproxy is not ours here; the state file holds no states, as on a host's first
    start). `chroot /var/lib/haproxy` and `user haproxy` stay: Debian's haproxy package made both.
    `log /dev/log` stays too: where nothing listens there, log lines are dropped (nginx stream, as
    configured here, logs nothing either)."""
    assert f"stats socket {ADMIN_SOCKET} " in cfg and f"server-state-file {SERVER_STATE_FILE}\n" in cfg
    state = run_dir / "haproxy-server-state"
    state.write_text("1\n")
    cfg = cfg.replace(f"server-state-file {SERVER_STATE_FILE}\n", f"server-state-file {state}\n", 1)
    return cfg.replace(f"stats socket {ADMIN_SOCKET} ", f"stats socket {run_dir}/haproxy-admin.sock ", 1)


def with_lines(cfg: str, section: str, lines: list[str]) -> str:
    """cfg with `lines` appended to its `global` or `defaults` section."""
    head, marker, rest = cfg.partition(f"\n{section}\n")
    assert marker, f"no {section} section"
    body, sep, tail = rest.partition("\n\n")
    added = "".join(f"\n    {line}" for line in lines)
    return f"{head}{marker}{body}{added}{sep}{tail}"


def variant_config(cfg: str, name: str) -> str:
    for section, lines in VARIANTS[name].items():
        cfg = with_lines(cfg, section, lines)
    return cfg


def _nginx_argv(conf: Path, prefix: Path) -> list[str]:
    return ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log"), "-g", "daemon off;"]


def start_gateway(net: BenchNamespaces) -> None:
    """The lab's gateway stand-in (hack/lab/gateway-standin-conf.sh, unchanged) and its plain twin."""
    d = net.run_dir / "gw"
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=gateway.bench.invalid",
            "-keyout",
            str(d / "tls.key"),
            "-out",
            str(d / "tls.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    env = {
        **os.environ,
        "STANDIN_NAME": "bench-gw",
        "STANDIN_ADDRESS": GATEWAY,
        "STANDIN_DIR": str(d),
        "STANDIN_PID_FILE": str(d / "nginx.pid"),
        "HTTP_PORT": str(NODE_PORTS["http"]),
        "HTTPS_PORT": str(NODE_PORTS["https"]),
        "STATUS_PORT": str(NODE_PORTS["status"]),
        "TLS_CERT": str(d / "tls.crt"),
        "TLS_KEY": str(d / "tls.key"),
    }
    conf = subprocess.run(["bash", str(STANDIN_CONF)], env=env, check=True, capture_output=True, text=True).stdout
    (d / "nginx.conf").write_text(conf)
    net.spawn("gw", _nginx_argv(d / "nginx.conf", d), "gw-nginx.log")

    plain = net.run_dir / "plain"
    (plain / "tmp").mkdir(parents=True, exist_ok=True)
    # The same server without a PROXY header (the kernel-routed visitor sends none): same worker
    # count and answer (the client address), so the difference is the proxy in between.
    (plain / "nginx.conf").write_text(f"""\
worker_processes 1;
pid {plain}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {plain}/tmp;
    proxy_temp_path {plain}/tmp;
    fastcgi_temp_path {plain}/tmp;
    uwsgi_temp_path {plain}/tmp;
    scgi_temp_path {plain}/tmp;
    default_type text/plain;
    add_header X-Lab-Gateway bench-gw always;
    server {{
        listen {GATEWAY}:{PLAIN_PORT};
        location / {{ return 200 "$remote_addr\\n"; }}
    }}
}}
""")
    net.spawn("gw", _nginx_argv(plain / "nginx.conf", plain), "plain-nginx.log")


def start_nginx_stream(net: BenchNamespaces) -> subprocess.Popen:
    """nginx's stream module in front of the stand-in with `proxy_protocol on`, as a user would write it."""
    d = net.run_dir / "stream"
    d.mkdir(parents=True, exist_ok=True)
    (d / "nginx.conf").write_text(f"""\
load_module {NGINX_STREAM_MODULE};
worker_processes auto;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
stream {{
    server {{
        listen {EDGE}:{NGINX_STREAM_PORT};
        proxy_pass {GATEWAY}:{NODE_PORTS["http"]};
        proxy_protocol on;
    }}
}}
""")
    return net.spawn("edge", _nginx_argv(d / "nginx.conf", d), "stream-nginx.log")


def start_haproxy(net: BenchNamespaces, cfg: str, name: str) -> subprocess.Popen:
    path = net.run_dir / f"haproxy-{name}.cfg"
    path.write_text(for_namespace(cfg, net.run_dir))
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(path)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy -c refused {path}: {check.stdout}{check.stderr}")
    # Master-worker in the foreground, like Debian's unit (-Ws); stopped by its pid.
    return net.spawn("edge", ["haproxy", "-W", "-db", "-f", str(path)], f"haproxy-{name}.log")


def answer(net: BenchNamespaces, url: str) -> str:
    result = net.run("v", ["curl", "-sS", "--max-time", "2", url], timeout=10)
    return result.stdout.strip()


def wait_for(net: BenchNamespaces, url: str, seconds: float = 15) -> None:
    """Until `url` answers with the visitor's own address: the path works and keeps the address."""
    wait_until(lambda: answer(net, url) == VISITOR, seconds, url)


def wrk(net: BenchNamespaces, url: str, mode: str, seconds: float) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t",
        str(WRK_THREADS),
        "-c",
        str(WRK_CONNECTIONS),
        "-d",
        f"{seconds:g}s",
        "--latency",
        "-s",
        str(LUA),
        *MODES[mode],
        url,
    ]
    result = net.run(
        "v", argv, timeout=seconds + 30, env={"BENCH_MAX_REQUESTS_PER_THREAD": str(MAX_REQUESTS_PER_THREAD)}
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr}")
    return parse_wrk(result.stdout)


@dataclass
class Target:
    url: str
    start: Callable[[], subprocess.Popen] | None = None
    """Runs this target's proxy for its turn only (tuning trials: one HAProxy at a time)."""
    process: subprocess.Popen | None = None
    """The proxy (its master), whose CPU time is counted; None for the kernel-routed path."""


def measure(
    net: BenchNamespaces, targets: dict[str, Target], runs: int, seconds: float, pairs: list[tuple[str, str]]
) -> dict[str, Any]:
    """Each run measures every target once in each mode, in an order that rotates from run to run.

    Figures are medians over runs. Each ratio in `pairs` (numerator, denominator) is the median of
    the per-run ratios, so both sides of a ratio always shared the machine's state. Beside req/s,
    the proxy's own CPU time per request (master and workers, from /proc): on a busy machine it
    moves far less than req/s, which other processes' load shifts.
    """
    results: dict[str, dict[str, list]] = {mode: {name: [] for name in targets} for mode in MODES}
    names = list(targets)
    for run in range(runs):
        order = names[run % len(names) :] + names[: run % len(names)]
        for name in order:
            target = targets[name]
            process = target.start() if target.start else target.process
            try:
                wait_for(net, target.url)
                if run == 0 or target.start:
                    wrk(net, target.url, "keep-alive", 1)  # warm-up, not counted
                for mode in MODES:
                    cpu_before = tree_cpu_seconds(process.pid) if process else 0.0
                    figures = wrk(net, target.url, mode, seconds)
                    cpu = (tree_cpu_seconds(process.pid) if process else 0.0) - cpu_before
                    figures["cpu_us_per_request"] = round(cpu * 1e6 / max(figures["requests"], 1), 2)
                    results[mode][name].append(figures)
            finally:
                if target.start and process is not None:
                    net.stop(process)
            print(
                f"  run {run + 1}/{runs} {name}: "
                + ", ".join(
                    f"{mode} {results[mode][name][-1]['rps']:,.0f} req/s "
                    f"{results[mode][name][-1]['cpu_us_per_request']} us/req"
                    for mode in MODES
                ),
                file=sys.stderr,
            )
    measured: dict[str, Any] = {}
    for mode, per_name in results.items():
        measured[mode] = {name: summarize(per_name[name]) for name in names}
        for name in names:
            measured[mode][name]["cpu_us_per_request"] = round(
                median(r["cpu_us_per_request"] for r in per_name[name]), 2
            )
        measured[mode]["ratios"] = {
            f"{a}/{b}": round(median(x["rps"] / y["rps"] for x, y in zip(per_name[a], per_name[b], strict=False)), 2)
            for a, b in pairs
        }
        measured[mode]["cpu_ratios"] = {
            f"{a}/{b}": round(
                median(
                    x["cpu_us_per_request"] / y["cpu_us_per_request"]
                    for x, y in zip(per_name[a], per_name[b], strict=False)
                ),
                2,
            )
            for a, b in pairs
            if targets[b].process or targets[b].start
        }
    return measured


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (all their threads), in seconds."""
    total, pending = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15 of stat)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def bench(runs: int = 3, seconds: float = 5, variants: list[str] | None = None) -> dict[str, Any]:
    net = BenchNamespaces("sieb", LINKS, RUN_DIR)
    cfg = rendered_config()
    with net:
        start_gateway(net)
        wait_until(
            lambda: (
                net.run(
                    "edge",
                    [
                        "curl",
                        "-sf",
                        "-o",
                        "/dev/null",
                        "--max-time",
                        "1",
                        f"http://{GATEWAY}:{NODE_PORTS['status']}/healthz/ready",
                    ],
                    timeout=5,
                ).returncode
                == 0
            ),
            10,
            "gateway stand-in",
        )
        haproxy_url = f"http://{EDGE}/"
        if variants:
            # Tuning trials: the rendered config and each variant, one HAProxy at a time.
            targets = {"haproxy": Target(haproxy_url, start=lambda: start_haproxy(net, cfg, "rendered"))}
            for name in variants:
                targets[f"haproxy+{name}"] = Target(
                    haproxy_url, start=lambda name=name: start_haproxy(net, variant_config(cfg, name), name)
                )
            pairs = [(f"haproxy+{name}", "haproxy") for name in variants]
        else:
            targets = {
                "routed": Target(f"http://{GATEWAY}:{PLAIN_PORT}/"),
                "nginx-stream": Target(f"http://{EDGE}:{NGINX_STREAM_PORT}/", process=start_nginx_stream(net)),
                "haproxy": Target(haproxy_url, process=start_haproxy(net, cfg, "rendered")),
            }
            pairs = [("haproxy", "nginx-stream"), ("haproxy", "routed")]
        measured = measure(net, targets, runs, seconds, pairs)
    measured["settings"] = {
        "runs": runs,
        "seconds": seconds,
        "wrk_threads": WRK_THREADS,
        "wrk_connections": WRK_CONNECTIONS,
        "cpus": os.cpu_count(),
        "haproxy": _version(["haproxy", "-v"]),
        "nginx": _version(["nginx", "-v"]),
        "variants": {v: VARIANTS[v] for v in variants or []},
    }
    return measured


def rows(result: dict[str, Any]) -> list[list[Any]]:
    out = []
    for mode in MODES:
        per_name = result[mode]
        for name, s in per_name.items():
            if name in ("ratios", "cpu_ratios"):
                continue
            out.append([mode, name, s["rps"], s["p50"], s["p99"], s["cpu_us_per_request"] or "-", s["errors"]])
        for label, value in per_name["ratios"].items():
            cpu = per_name["cpu_ratios"].get(label)
            out.append([mode, label, f"{value}x", "", "", f"{cpu}x" if cpu else "", ""])
    return out


HEADER = ("mode", "path", "req/s", "p50 ms", "p99 ms", "proxy CPU us/req", "errors")


def _version(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return (result.stdout or result.stderr).splitlines()[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.datapath", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.runs < 3 or not 1 <= args.seconds <= 30:
        parser.error("at least 3 runs (figures are medians), 1 to 30 seconds each")
    exit_on_sigterm()
    result = bench(args.runs, args.seconds, args.variant)
    print(table(HEADER, rows(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
