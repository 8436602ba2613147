"""Helpers to look at and drive a running lab (see hack/lab/up.sh); used by hack/lab/prove.py and tests/lab.

Every request goes to addresses inside the lab's own network namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOAD_SCRIPT = Path(__file__).resolve().with_name("load.py")


# What a Kubernetes cluster creates and removes by itself, whatever is installed: left out when the
# lab's API server is compared before and after a stack (Lab.cluster_objects).
CLUSTER_CHURN = {"events", "events.events.k8s.io", "leases.coordination.k8s.io"}


@dataclass(frozen=True)
class Visitor:
    name: str
    namespace: str
    address: str
    target: str
    """The HAProxy host address this visitor connects to (IPv4 or IPv6)."""
    allowed: bool = True
    """Whether the stack's access lists let this address through (the lab's denied visitors: False)."""

    def url(self, scheme: str) -> str:
        host = f"[{self.target}]" if ":" in self.target else self.target
        return f"{scheme}://{host}/"


@dataclass(frozen=True)
class LabHost:
    """One HAProxy host of the lab's HA pair."""

    name: str
    namespace: str
    address: str
    root: Path
    pid_file: Path
    switch_port: dict | None = None
    """The host's port on the lab's edge bridge: {"namespace": the router's, "name": the port}."""


@dataclass(frozen=True)
class Lab:
    name: str
    dir: Path
    """build/<name> in the checkout: plain files only (lab.json, the rendered Kubernetes YAML)."""
    run_dir: Path
    """The lab's live state (host root, keys, pid files), outside the checkout."""
    host_root: Path
    """The HAProxy host's root directory, as unpacked: the booted host mounts its /run over it."""
    private_key_file: Path
    known_hosts_file: Path
    edge_namespace: str
    edge_address: str
    visitors: tuple[Visitor, ...]
    gateways: tuple[dict, ...]
    hosts: tuple[LabHost, ...] = ()
    """Both HAProxy hosts; the first is the one `edge_*`, `ssh` and `host_path` mean."""
    vip: str | None = None
    """The address the pair shares (keepalived), which the visitors' IPv4 requests go to."""
    vrrp_password_file: Path | None = None
    kubeconfig: Path | None = None
    """The lab's Kubernetes API server, from the root namespace (hack/lab/control-plane.sh)."""
    control_plane: Path | None = None
    """The control plane's control-plane.json: its API server, istiod, chart repository."""
    gateway_service: dict | None = None
    """The gateway Service the stack installs: namespace, name and the NodePorts its config pins."""
    data_plane: str = "nginx"
    """envoy: the gateway pods run pilot-agent and Envoy (hack/lab/node_agent.py); nginx: the stand-ins."""
    node_agent: dict | None = None
    """The node agents' config file, the pods' directory and the prefix of the pods' namespaces."""

    @classmethod
    def load(cls, name: str = "lab") -> Lab:
        raw = json.loads((REPO / "build" / name / "lab.json").read_text())
        return cls(
            name=raw["name"],
            dir=Path(raw["dir"]),
            run_dir=Path(raw["runDir"]),
            host_root=Path(raw["hostRoot"]),
            private_key_file=Path(raw["privateKeyFile"]),
            known_hosts_file=Path(raw["knownHostsFile"]),
            edge_namespace=raw["edge"]["namespace"],
            edge_address=raw["edge"]["address"],
            visitors=tuple(Visitor(**v) for v in raw["visitors"]),
            gateways=tuple(raw["gateways"]),
            hosts=tuple(
                LabHost(
                    name=h["name"],
                    namespace=h["namespace"],
                    address=h["address"],
                    root=Path(h["root"]),
                    pid_file=Path(h["pidFile"]),
                    switch_port=h.get("switchPort"),
                )
                for h in raw.get("hosts", ())
            ),
            vip=raw.get("vip"),
            vrrp_password_file=Path(raw["vrrpPasswordFile"]) if raw.get("vrrpPasswordFile") else None,
            kubeconfig=Path(raw["kubeconfig"]) if raw.get("kubeconfig") else None,
            control_plane=Path(raw["controlPlane"]) if raw.get("controlPlane") else None,
            gateway_service=raw.get("gatewayService"),
            data_plane=raw.get("dataPlane", "nginx"),
            node_agent=raw.get("nodeAgent"),
        )

    def kubectl(self, *args: str, timeout: float = 60, input_json: dict | None = None) -> subprocess.CompletedProcess:
        """The toolchain's kubectl against the lab's API server (input_json: an object on stdin)."""
        if self.kubeconfig is None:
            raise RuntimeError(f"lab {self.name} has no control plane (no kubeconfig in lab.json)")
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "--request-timeout=20s", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=None if input_json is None else json.dumps(input_json),
        )

    def cluster_objects(self) -> set[str]:
        """Every object the lab's API server holds, as `apiVersion Kind namespace/name`, apart from
        what a cluster churns by itself whatever is installed (events, leases)."""
        listed = self.kubectl("api-resources", "--verbs=list", "-o", "name")
        if listed.returncode != 0:
            raise RuntimeError(f"kubectl api-resources: {listed.stderr.strip()}")
        resources = [r for r in listed.stdout.split() if r not in CLUSTER_CHURN]
        each = '{range .items[*]}{.apiVersion} {.kind} {.metadata.namespace}/{.metadata.name}{"\\n"}{end}'
        result = self.kubectl("get", ",".join(resources), "--all-namespaces", "-o", f"jsonpath={each}")
        if result.returncode != 0:
            raise RuntimeError(f"kubectl get (every resource): {result.stderr.strip()}")
        return {line for line in result.stdout.splitlines() if line}

    def kube_json(self, *args: str) -> dict:
        """`kubectl get ... -o json` against the lab's API server, parsed; raises if kubectl fails."""
        result = self.kubectl("get", *args, "-o", "json")
        if result.returncode != 0:
            raise RuntimeError(f"kubectl get {' '.join(args)}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def host_path(self, path: str) -> Path:
        """A file of the HAProxy host as the host sees it, read from the lab machine.

        Through the root of the host's PID 1 while it runs, so /run (a tmpfs in the container's
        own mount namespace) is seen as the host sees it; the root directory once it is halted.
        """
        init = self.host_init_pid()
        root = Path(f"/proc/{init}/root") if init else self.host_root
        return root / path.lstrip("/")

    def host_init_pid(self) -> int | None:
        """The HAProxy host's systemd (PID 1 in its container), as a pid of the lab machine."""
        for pid in self.namespace_pids(self.edge_namespace):
            if _namespace_pids(pid)[1:] == [1]:
                return pid
        return None

    def host_log(self, identifier: str) -> str:
        """What one program (syslog identifier, e.g. sshd) logged on the HAProxy host, from its journal."""
        result = subprocess.run(
            [
                "journalctl",
                "--root",
                str(self.host_path("/")),
                "--identifier",
                identifier,
                "--output",
                "cat",
                "--no-pager",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"journalctl failed: {result.stderr.strip()}")
        return result.stdout

    def ssh(self, command: str, timeout: float = 30, address: str | None = None) -> subprocess.CompletedProcess:
        """`command` on the first HAProxy host, or on the one at `address`."""
        return subprocess.run(
            [
                "ssh",
                "-q",
                "-i",
                str(self.private_key_file),
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                f"UserKnownHostsFile={self.known_hosts_file}",
                "-o",
                "StrictHostKeyChecking=yes",
                f"root@{address or self.edge_address}",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def vip_holders(self) -> list[LabHost]:
        """The hosts that have the VIP on an interface now (read from their network namespaces)."""
        holders = []
        for host in self.hosts:
            out = in_namespace(host.namespace, ["ip", "-o", "-4", "addr", "show"], timeout=10).stdout
            if f" {self.vip}/" in out:
                holders.append(host)
        return holders

    def flood_multicast_to_hosts(self, on: bool) -> None:
        """Whether the edge bridge passes multicast (VRRP's 224.0.0.18 among it) to the HAProxy hosts
        (`bridge link set ... mcast_flood`): off, the segment drops multicast as many networks do."""
        for host in self.hosts:
            port = host.switch_port
            if not port:
                raise RuntimeError(f"lab.json has no switch port for {host.name}: make lab-down and make lab again")
            subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    port["namespace"],
                    "bridge",
                    "link",
                    "set",
                    "dev",
                    port["name"],
                    "mcast_flood",
                    "on" if on else "off",
                ],
                check=True,
                capture_output=True,
                timeout=10,
            )

    def units_active(self, host: LabHost, *units: str) -> list[str]:
        """`systemctl is-active` of each unit on one host, in order ("active", "inactive", ...)."""
        result = self.ssh(f"systemctl is-active {' '.join(units)}", address=host.address)
        return result.stdout.split()

    def metrics(self, host: LabHost, bind: str = "127.0.0.1:8404", path: str = "/metrics") -> str:
        """What the host's HAProxy serves on its metrics listener, read inside its namespace."""
        result = in_namespace(host.namespace, ["curl", "-sS", "--max-time", "5", f"http://{bind}{path}"], timeout=15)
        if result.returncode != 0:
            raise RuntimeError(f"metrics on {host.name}: curl exit {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def master_pid(self) -> int | None:
        """The HAProxy master's pid (a pid of the lab machine), from the host's pidfile, if alive.

        The pidfile holds the pid inside the host's own PID namespace: matched through NSpid.
        """
        pidfile = self.host_path("/run/haproxy.pid")
        if not pidfile.exists():
            return None
        text = pidfile.read_text().split()
        if not text:
            return None
        inner = int(text[0])
        for pid in self.haproxy_pids():
            if _namespace_pids(pid)[-1:] == [inner]:
                return pid
        return None

    def haproxy_pids(self) -> set[int]:
        """Every live haproxy process on the HAProxy host (in its network namespace)."""
        return {pid for pid in self.namespace_pids(self.edge_namespace) if _is_live_haproxy(pid)}

    @staticmethod
    def namespace_pids(namespace: str) -> set[int]:
        out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10)
        return {int(p) for p in out.stdout.split()}

    def seen_by_gateway(self, visitor: Visitor, scheme: str) -> str:
        """What the gateway stand-in answered: the client address it read from the PROXY header."""
        argv = ["curl", "-sS", "--max-time", "5", "-k", visitor.url(scheme)]
        result = in_namespace(visitor.namespace, argv, timeout=15)
        if result.returncode != 0:
            return f"error (curl exit {result.returncode})"
        return result.stdout.strip()

    def visit(self, visitor: Visitor, scheme: str, path: str = "/") -> tuple[str, str]:
        """One request from the visitor's own address: (HTTP status, or `closed` when the connection
        ended without an answer; the body)."""
        argv = ["curl", "-sS", "--max-time", "5", "-k", "--interface", visitor.address, "-w", "\n%{http_code}"]
        result = in_namespace(visitor.namespace, [*argv, visitor.url(scheme).rstrip("/") + path], timeout=15)
        body, _, code = result.stdout.rpartition("\n")
        if result.returncode != 0 or code == "000":
            return "closed", f"curl exit {result.returncode}"
        return code, body.strip()

    def gateway_logs(self) -> dict[str, int]:
        """The size of each gateway pod's proxy log (pilot-agent's and Envoy's stdout: the access log)."""
        pods = Path(self.node_agent["pods"]) if self.node_agent else None
        return {str(p): p.stat().st_size for p in sorted(pods.glob("*/istio-proxy.log"))} if pods else {}

    def access_log_since(self, sizes: dict[str, int]) -> list[str]:
        """The access log lines the gateway pods wrote since `sizes` (gateway_logs)."""
        lines = []
        for path in self.gateway_logs():
            with open(path, "rb") as fh:
                fh.seek(sizes.get(path, 0))
                lines += [line for line in fh.read().decode(errors="replace").splitlines() if line.startswith("[")]
        return lines

    def start_load(
        self,
        visitor: Visitor,
        scheme: str = "http",
        seconds: float = 10,
        max_requests: int = 50_000,
        concurrency: int = 4,
    ) -> subprocess.Popen:
        """A bounded load from a visitor: a new connection per request; stops by itself."""
        argv = [
            sys.executable,
            str(LOAD_SCRIPT),
            "--url",
            visitor.url(scheme),
            "--expect",
            visitor.address,
            "--seconds",
            str(seconds),
            "--max-requests",
            str(max_requests),
            "--concurrency",
            str(concurrency),
        ]
        return subprocess.Popen(
            ["ip", "netns", "exec", visitor.namespace, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


def load_result(process: subprocess.Popen, timeout: float) -> dict:
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.strip()}")
    return json.loads(out)


def in_namespace(namespace: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True, timeout=timeout)


def _namespace_pids(pid: int) -> list[int]:
    """A process's pid in each PID namespace it is in, outermost first (NSpid); [] if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return [int(p) for p in line.split()[1:]]
    return []


def _is_live_haproxy(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return status.startswith("Name:\thaproxy") and "\nState:\tZ" not in status


def pulumi_env() -> dict[str, str]:
    """This process's environment (the toolchain's PATH, backend and passphrase come from make)."""
    return dict(os.environ)
