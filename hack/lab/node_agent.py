"""What runs on one of the lab's nodes for the pods the scheduler puts there: the jobs of a kubelet and
of kube-proxy, for the pods whose image the lab can run (docs/lab.md, "The gateway's data plane").

One agent per node, in the node's network namespace (hack/lab/up.sh starts it with `nsenter --net`,
so the pods' namespaces it adds are the machine's). Each pass, bounded in time:

- kubelet: every pod bound to this node whose image is one the lab runs gets a network namespace
  whose address is the pod IP the API server holds, linked to the node by a veth, and its container's
  process started in it (pilot-agent for Istio's proxy image, which starts the stock Envoy; the echo
  backend for the lab's echo image), with the pod's environment, arguments and volumes resolved as a
  kubelet resolves them. The container's readiness probe (HTTP GET) runs from the node against the pod
  IP, and its result is the pod's Ready condition in the API server. A pod that is gone has its
  process stopped (SIGTERM, then SIGKILL after its grace period) and its namespace removed.
- kube-proxy: NodePort traffic arriving at the node goes to a ready endpoint of the Service
  (EndpointSlices); with externalTrafficPolicy Local only to a ready pod on this node, keeping the
  client's address, and is dropped when there is none; pods' traffic leaving the pod network is
  masqueraded. Routes to the pods on other nodes go via those nodes.

Usage: nsenter --net=/run/netns/NODE_NS python -m hack.lab.node_agent CONFIG.json NODE_NAME
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, config

PASS_SECONDS = 1.0
"""How often the agent looks at the API server (a kubelet's pod sync and kube-proxy's resync)."""
MAX_GRACE_SECONDS = 30
PROXY_IMAGE = re.compile(r"(^|/)proxyv2(:|@|$)")
ECHO_IMAGE = "lab.invalid/echo"
NFT_TABLE = "lab-kube-proxy"
CLUSTER_MARK = "0x4000"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


SUFFIXES = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str) -> float:
    """A Kubernetes resource quantity (`500m`, `1Gi`, `2`) as a number."""
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text.strip())
    if not m or m.group(2) not in ("", *SUFFIXES):
        raise ValueError(f"not a quantity: {text!r}")
    return float(m.group(1)) * SUFFIXES.get(m.group(2), 1)


def short(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:7]


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    ip: str
    netns: str
    veth: str
    dir: Path
    container: str
    argv: list[str]
    env: dict[str, str]
    probe: dict | None
    grace: int
    proc: subprocess.Popen | None = None
    ready: bool = False
    reported: bool | None = None
    started: float = 0.0
    next_probe: float = 0.0
    failures: int = 0
    restarts: int = 0
    restart_at: float = 0.0
    log_file: Path = field(default_factory=Path)


class Agent:
    def __init__(self, cfg: dict, node: str) -> None:
        self.cfg = cfg
        self.node = node
        self.node_ns = cfg["nodes"][node]["namespace"]
        self.node_ip = cfg["nodes"][node]["address"]
        self.pod_cidr = cfg["podCidr"]
        self.runs: dict[str, PodRun] = {}
        self.routes: dict[str, str] = {}
        self.ruleset = ""
        config.load_kube_config(config_file=cfg["kubeconfig"])
        self.core = client.CoreV1Api()
        self.discovery = client.DiscoveryV1Api()
        self.stopping = False

    # --- the node's own network -------------------------------------------------------------------
    def prepare_node(self) -> None:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        self.apply_rules([], {})

    def route(self, ip: str, dev: str | None = None, via: str | None = None) -> None:
        want = f"dev {dev}" if dev else f"via {via}"
        if self.routes.get(ip) != want:
            run("ip", "route", "replace", f"{ip}/32", *want.split())
            self.routes[ip] = want

    def unroute(self, ip: str) -> None:
        if self.routes.pop(ip, None):
            run("ip", "route", "del", f"{ip}/32", check=False)

    # --- kubelet ----------------------------------------------------------------------------------
    def runnable(self, pod) -> str | None:
        for c in pod.spec.containers:
            if c.name == "istio-proxy" and PROXY_IMAGE.search(c.image or "") and "router" in (c.args or []):
                return c.name
            if c.image == ECHO_IMAGE:
                return c.name
        return None

    def field_value(self, pod, path: str) -> str:
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (getattr(pod.metadata, m.group(1)) or {}).get(m.group(2), "")
        values = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name,
            "spec.serviceAccountName": pod.spec.service_account_name,
            "status.podIP": pod.status.pod_ip,
            "status.podIPs": ",".join(p.ip for p in pod.status.pod_ips or []),
            "status.hostIP": self.node_ip,
            "status.hostIPs": self.node_ip,
        }
        if path not in values:
            raise RuntimeError(f"pod {pod.metadata.name}: fieldRef {path} is not one this agent resolves")
        return values[path] or ""

    def resource_value(self, pod, container, ref) -> str:
        resources = container.resources
        kind, _, name = ref.resource.partition(".")
        amounts = (resources.limits if kind == "limits" else resources.requests) or {}
        value = amounts.get(name)
        if value is None:  # no limit: the node's allocatable, as a kubelet gives it
            node = self.core.read_node(self.node)
            value = (node.status.allocatable or {}).get(name, "0")
        # As a kubelet: the quantity divided by the divisor, rounded up (cpu at least 1).
        amount = -(-quantity(str(value)) // quantity(str(ref.divisor or "1")))
        return str(max(1, int(amount)) if name == "cpu" else int(amount))

    def expand(self, text: str, env: dict[str, str]) -> str:
        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)

    def container_env(self, pod, container) -> dict[str, str]:
        env: dict[str, str] = {}
        for e in container.env or []:
            if e.value_from is None:
                env[e.name] = self.expand(e.value or "", env)
            elif e.value_from.field_ref:
                env[e.name] = self.field_value(pod, e.value_from.field_ref.field_path)
            elif e.value_from.resource_field_ref:
                env[e.name] = self.resource_value(pod, container, e.value_from.resource_field_ref)
            else:
                raise RuntimeError(f"pod {pod.metadata.name}: env {e.name} comes from a source this agent lacks")
        return env

    def write_volumes(self, pod, container, root: Path) -> None:
        """The container's volume mounts under its root: downward API, ConfigMap, projected service
        account token and emptyDir volumes, as a kubelet writes them."""
        volumes = {v.name: v for v in pod.spec.volumes or []}
        for mount in container.volume_mounts or []:
            volume = volumes[mount.name]
            target = root / mount.mount_path.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            sources = []
            if volume.projected:
                sources = volume.projected.sources
            for src in sources or [volume]:
                if getattr(src, "downward_api", None):
                    for item in src.downward_api.items:
                        (target / item.path).write_text(self.downward(pod, item.field_ref.field_path))
                if getattr(src, "config_map", None):
                    cm = self.core.read_namespaced_config_map(src.config_map.name, pod.metadata.namespace)
                    for key, value in (cm.data or {}).items():
                        (target / key).write_text(value)
                if getattr(src, "service_account_token", None):
                    sat = src.service_account_token
                    spec = client.V1TokenRequestSpec(
                        audiences=[sat.audience] if sat.audience else [],
                        expiration_seconds=sat.expiration_seconds or 3600,
                        bound_object_ref=client.V1BoundObjectReference(
                            kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid
                        ),
                    )
                    token = self.core.create_namespaced_service_account_token(
                        pod.spec.service_account_name,
                        pod.metadata.namespace,
                        client.AuthenticationV1TokenRequest(spec=spec),
                    )
                    path = target / sat.path
                    path.write_text(token.status.token)
                    path.chmod(0o600)

    def downward(self, pod, path: str) -> str:
        if path in ("metadata.labels", "metadata.annotations"):
            items = getattr(pod.metadata, path.split(".")[1]) or {}
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(items.items()))
        return self.field_value(pod, path)

    def start(self, pod, container_name: str) -> PodRun:
        uid, ns, name, ip = pod.metadata.uid, pod.metadata.namespace, pod.metadata.name, pod.status.pod_ip
        container = next(c for c in pod.spec.containers if c.name == container_name)
        key = short(uid)
        root = Path(self.cfg["runDir"]) / "pods" / f"{ns}.{name}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        root.chmod(0o700)
        netns = f"{self.cfg['nsPrefix']}-pod-{key}"
        veth = f"pv{key}"
        run("ip", "netns", "add", netns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "-n", netns, "link", "set", "lo", "up")
        run("ip", "-n", netns, "addr", "add", f"{ip}/32", "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "-n", netns, "route", "add", "default", "dev", "eth0")
        Path(f"/proc/sys/net/ipv4/conf/{veth}/proxy_arp").write_text("1\n")
        run("ip", "link", "set", veth, "up")
        self.route(ip, dev=veth)
        env = self.container_env(pod, container)
        self.write_volumes(pod, container, root)
        if container.image == ECHO_IMAGE:
            argv = [sys.executable, self.cfg["echo"], "--dir", str(root)]
        else:
            argv = [self.cfg["pilotAgent"], *(self.expand(a, env) for a in container.args or [])]
            # Istio's proxy image holds the bootstrap template and Envoy at fixed paths; here they are the
            # pinned module's template and the stock Envoy (docs/stand-ins.md, the gateway's row).
            template = root / "var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
            template.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.cfg["bootstrapTemplate"], template)
            proxy_config = json.loads(env.get("PROXY_CONFIG") or "{}")
            proxy_config["binaryPath"] = self.cfg["envoy"]
            env["PROXY_CONFIG"] = json.dumps(proxy_config)
        probe = None
        rp = container.readiness_probe
        if rp and rp.http_get:
            probe = {
                "port": int(rp.http_get.port),
                "path": rp.http_get.path or "/",
                "period": rp.period_seconds or 10,
                "timeout": rp.timeout_seconds or 1,
                "failure": rp.failure_threshold or 3,
                "delay": rp.initial_delay_seconds or 0,
            }
        hosts = root / "etc-hosts"
        names = " ".join(self.cfg["istiod"]["names"])
        hosts.write_text(f"127.0.0.1 localhost\n{ip} {name}\n{self.cfg['istiod']['address']} {names}\n")
        grace = min(pod.spec.termination_grace_period_seconds or 30, MAX_GRACE_SECONDS)
        r = PodRun(uid, ns, name, ip, netns, veth, root, container_name, argv, env, probe, grace)
        r.log_file = root / f"{container_name}.log"
        self.launch(r)
        log(f"pod {ns}/{name} ({ip}): started {Path(argv[0]).name} in {netns} (pid {r.proc.pid})")
        return r

    def launch(self, r: PodRun) -> None:
        # The pod's own /etc/hosts (its mount namespace only): the pod network has no cluster DNS, so the
        # name of istiod's Service is the control plane's address here.
        script = 'mount --bind "$1" /etc/hosts && ns=$2 && shift 2 && exec nsenter --net="$ns" -- "$@"'
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(r.dir / "etc-hosts")]
        argv += [f"/run/netns/{r.netns}", *r.argv]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(r.dir), **r.env}
        with open(r.log_file, "ab") as out:
            r.proc = subprocess.Popen(
                argv, cwd=r.dir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        (Path(self.cfg["runDir"]) / "pods" / f"pod-{short(r.uid)}.pid").write_text(f"{r.proc.pid}\n")
        r.started = time.monotonic()
        r.next_probe = r.started + (r.probe["delay"] if r.probe else 0)
        r.ready = False

    def stop(self, r: PodRun) -> None:
        if r.proc and r.proc.poll() is None:
            os.killpg(r.proc.pid, signal.SIGTERM)
            try:
                r.proc.wait(timeout=r.grace)
            except subprocess.TimeoutExpired:
                os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait(timeout=10)
        (Path(self.cfg["runDir"]) / "pods" / f"pod-{short(r.uid)}.pid").unlink(missing_ok=True)
        self.unroute(r.ip)
        run("ip", "netns", "del", r.netns, check=False)
        shutil.rmtree(r.dir, ignore_errors=True)
        log(f"pod {r.namespace}/{r.name}: stopped, namespace {r.netns} removed")

    def probe(self, r: PodRun) -> bool:
        conn = http.client.HTTPConnection(r.ip, r.probe["port"], timeout=r.probe["timeout"])
        try:
            conn.request("GET", r.probe["path"], headers={"User-Agent": "kube-probe/1.34"})
            return 200 <= conn.getresponse().status < 400
        except OSError:
            return False
        finally:
            conn.close()

    def tick(self, r: PodRun, now: float) -> None:
        if r.proc and r.proc.poll() is not None:
            if r.restart_at == 0:
                delay = min(10 * 2**r.restarts, 300)
                log(f"pod {r.namespace}/{r.name}: exited {r.proc.returncode}; restarting in {delay}s")
                r.restart_at, r.ready = now + delay, False
            elif now >= r.restart_at:
                r.restarts, r.restart_at = r.restarts + 1, 0
                self.launch(r)
            return
        if r.probe is None:
            r.ready = True
        elif now >= r.next_probe:
            r.next_probe = now + r.probe["period"]
            if self.probe(r):
                r.failures, r.ready = 0, True
            else:
                r.failures += 1
                if r.failures >= r.probe["failure"] or not r.ready:
                    r.ready = False

    def not_ready(self, pod) -> None:
        """A pod whose container cannot start is not ready (kwok marks every pod Ready at creation)."""
        ready = {c.type: c.status for c in pod.status.conditions or []}.get("Ready")
        if ready != "False":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            conditions = [
                {"type": t, "status": "False", "lastTransitionTime": stamp} for t in ("Ready", "ContainersReady")
            ]
            self.core.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": {"conditions": conditions}}
            )

    def report(self, r: PodRun, pod) -> None:
        """The probe's result as the pod's Ready condition, whenever the API server holds another one
        (kwok's pod-ready stage marks every new pod Ready, before any probe ran)."""
        held = {c.type: c.status for c in pod.status.conditions or []}.get("Ready")
        if r.reported == r.ready and held == ("True" if r.ready else "False"):
            return
        status = "True" if r.ready else "False"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [{"type": t, "status": status, "lastTransitionTime": stamp} for t in ("Ready", "ContainersReady")]
        pod = self.core.read_namespaced_pod_status(r.name, r.namespace)
        statuses = [
            {
                "name": c.name,
                "ready": r.ready if c.name == r.container else bool(c.ready),
                "restartCount": r.restarts if c.name == r.container else c.restart_count,
                "image": c.image,
                "imageID": c.image_id or "",
                "state": {"running": {"startedAt": stamp}},
            }
            for c in pod.status.container_statuses or []
        ]
        body = {"status": {"conditions": conditions, **({"containerStatuses": statuses} if statuses else {})}}
        self.core.patch_namespaced_pod_status(r.name, r.namespace, body)
        log(f"pod {r.namespace}/{r.name}: Ready={status}")
        r.reported = r.ready

    # --- kube-proxy -------------------------------------------------------------------------------
    def nodeport_rules(self) -> tuple[list[str], list[str]]:
        services = self.core.list_service_for_all_namespaces(timeout_seconds=10).items
        slices = self.discovery.list_endpoint_slice_for_all_namespaces(timeout_seconds=10).items
        return nodeport_rules(services, slices, self.node, self.node_ip)

    def apply_rules(self, dnat: list[str], drop: list[str]) -> None:
        nl = "\n        "
        ruleset = f"""table ip {NFT_TABLE} {{
    chain nodeports {{
        type nat hook prerouting priority dstnat; policy accept;
        {nl.join(dnat)}
    }}
    chain no_endpoints {{
        type filter hook prerouting priority -110; policy accept;
        {nl.join(drop)}
    }}
    chain pods_out {{
        type nat hook postrouting priority srcnat; policy accept;
        meta mark {CLUSTER_MARK} masquerade
        oifname "eth0" ip saddr {self.pod_cidr} ip daddr != {self.pod_cidr} masquerade
    }}
}}
"""
        if ruleset == self.ruleset:
            return
        run("nft", "-f", "-", input=f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n{ruleset}")
        self.ruleset = ruleset
        log(f"kube-proxy: {len(dnat)} NodePort(s) forwarded, {len(drop)} dropped (no ready local endpoint)")

    # --- the loop ---------------------------------------------------------------------------------
    def sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(timeout_seconds=10).items
        wanted = {}
        nodes = self.cfg["nodes"]
        for pod in pods:
            ip, node = pod.status.pod_ip, pod.spec.node_name
            if not ip or node not in nodes or ipaddress.ip_address(ip) not in ipaddress.ip_network(self.pod_cidr):
                continue
            if node != self.node:
                if self.runnable(pod):
                    self.route(ip, via=nodes[node]["address"])
                continue
            container = self.runnable(pod)
            if container and not pod.metadata.deletion_timestamp:
                wanted[pod.metadata.uid] = (pod, container)
        remote = {p.status.pod_ip for p in pods if p.spec.node_name != self.node}
        for ip, how in list(self.routes.items()):
            if how.startswith("via") and ip not in remote:
                self.unroute(ip)
        for uid in list(self.runs):
            if uid not in wanted:
                self.stop(self.runs.pop(uid))
        for uid, (pod, container) in wanted.items():
            if uid not in self.runs:
                try:
                    self.runs[uid] = self.start(pod, container)
                except Exception as exc:  # noqa: BLE001 (one pod that cannot start does not stop the node)
                    log(f"pod {pod.metadata.namespace}/{pod.metadata.name}: cannot start: {exc}")
                    self.not_ready(pod)
                    run("ip", "netns", "del", f"{self.cfg['nsPrefix']}-pod-{short(uid)}", check=False)
                    self.routes.pop(pod.status.pod_ip, None)
        now = time.monotonic()
        for uid, r in self.runs.items():
            self.tick(r, now)
            self.report(r, wanted[uid][0])
        self.apply_rules(*self.nodeport_rules())

    def loop(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self.prepare_node()
        log(f"node {self.node} ({self.node_ip}, namespace {self.node_ns}): agent up")
        while not self.stopping:
            started = time.monotonic()
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 (an API server restarting is not the node's end)
                log(f"sync failed: {exc}")
            time.sleep(max(0.1, PASS_SECONDS - (time.monotonic() - started)))
        for r in list(self.runs.values()):
            self.stop(r)
        run("nft", "delete", "table", "ip", NFT_TABLE, check=False)
        log("agent stopped")


def nodeport_rules(services: list, slices: list, node: str, node_ip: str) -> tuple[list[str], list[str]]:
    """kube-proxy's NodePort handling on one node, as nft rules: (DNAT rules, drop rules). A port of a
    NodePort or LoadBalancer Service goes to its ready endpoints (EndpointSlices), with
    externalTrafficPolicy Local only to those on this node, keeping the client's address, and is
    dropped when there is none (kube-proxy's nftables mode drops it too); with Cluster to any ready
    endpoint, masqueraded (the mark), and left alone (refused: nothing listens) when there is none."""
    dnat, drop = [], []
    by_service: dict[tuple[str, str], list] = {}
    for s in slices:
        owner = (s.metadata.labels or {}).get("kubernetes.io/service-name")
        if owner and s.address_type == "IPv4":
            by_service.setdefault((s.metadata.namespace, owner), []).append(s)
    for svc in services:
        if svc.spec.type not in ("NodePort", "LoadBalancer"):
            continue
        local = (svc.spec.external_traffic_policy or "Cluster") == "Local"
        for port in svc.spec.ports or []:
            if not port.node_port or (port.protocol or "TCP") != "TCP":
                continue
            targets = []
            for s in by_service.get((svc.metadata.namespace, svc.metadata.name), []):
                number = next((p.port for p in s.ports or [] if p.name == port.name), None)
                for ep in s.endpoints or []:
                    ready = ep.conditions is None or ep.conditions.ready is not False
                    if number and ready and (not local or ep.node_name == node):
                        targets += [f"{a} . {number}" for a in ep.addresses]
            match = f"ip daddr {node_ip} tcp dport {port.node_port}"
            if not targets:
                if local:
                    drop.append(f"{match} drop")
                continue
            targets.sort()
            mark = "" if local else f"meta mark set {CLUSTER_MARK} "
            if len(targets) == 1:
                dnat.append(f"{match} {mark}dnat ip to {targets[0].replace(' . ', ':')}")
            else:
                pairs = ", ".join(f"{i} : {t}" for i, t in enumerate(targets))
                dnat.append(f"{match} {mark}dnat ip to numgen random mod {len(targets)} map {{ {pairs} }}")
    return dnat, drop


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    Agent(cfg, sys.argv[2]).loop()


if __name__ == "__main__":
    main()
