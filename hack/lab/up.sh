#!/usr/bin/env bash
# Brings up the local lab (idempotent): network namespaces, two Debian HAProxy hosts booted
# with systemd as PID 1 (systemd-nspawn), reached over real SSH, which the stack makes an HA
# pair sharing a VIP; two PROXY-protocol gateway stand-ins (nginx), visitors, a local apt
# repository, the Kubernetes control plane the stack installs Istio into (hack/lab/control-plane.sh
# with CP_ISTIO=stack: it needs the toolchain on PATH, `eval "$(make -s toolchain-env)"`), and
# the lab stack's Pulumi.<LAB_NAME>.yaml. Live state goes to $LAB_DIR (under /run, never in the
# checkout); only plain files a user reads (lab.json, the objects make lab-validate exports) go
# to build/<LAB_NAME>.
#
#   visitors 198.51.100.7 (+2001:db8:100::7), 198.51.100.8 ─┐   (to the VIP 203.0.113.100)
#   HAProxy hosts 203.0.113.10 (+2001:db8:113::10), .20, ssh ┼── router ns (bridges, apt repo on 203.0.113.1:8080)
#   gateways 192.0.2.50, 192.0.2.51 (nginx proxy_protocol) ─┘        │
#   root ns: veth 203.0.113.254/32, routes to the HAProxy hosts only ┘
source "$(dirname "$0")/common.sh"
source "$LAB_REPO/hack/lab/host-lib.sh"

lab_is_up() {
  [ -f "$LAB_DIR/up" ] || return 1
  for ns in $LAB_NAMESPACES; do ns_exists "$ns" || return 1; done
  pid_alive "$HOST_PID_FILE" || return 1
  pid_alive "$HOST2_PID_FILE" || return 1
  for f in "$PID_DIR"/*.pid; do pid_alive "$f" || return 1; done
  bash "$LAB_REPO/hack/lab/control-plane.sh" status
}

refuse_foreign_lab
missing=""
binaries=$CP_BINARIES
[ "$LAB_DATA_PLANE" = envoy ] && binaries="$binaries $DATA_PLANE_BINARIES"
for b in $binaries; do command -v "$b" >/dev/null || missing="$missing $b"; done
if [ -n "$missing" ]; then
  log "not on PATH:$missing (the control plane's binaries: eval \"\$(make -s toolchain-env)\" first)" >&2
  exit 1
fi
if lab_is_up; then
  log "already up ($LAB_DIR)"
  exit 0
fi
leftovers=no
for ns in $LAB_NAMESPACES; do ns_exists "$ns" && leftovers=yes; done
{ [ -e "$LAB_DIR" ] || [ -e "$LAB_OUT" ] || ip link show "$ROOT_VETH" >/dev/null 2>&1; } && leftovers=yes
if [ "$leftovers" = yes ]; then
  log "removing the remains of an incomplete lab"
  bash "$LAB_REPO/hack/lab/down.sh"
fi
{ [ -s "$ROOTFS_TARBALL" ] && [ -s "$APT_REPO_DIR/Packages.gz" ]; } || bash "$LAB_REPO/hack/lab/cache-rootfs.sh"

started=$(date +%s)
mkdir -p "$LAB_DIR" "$PID_DIR" "$LAB_OUT" "$(dirname "$OWNER_FILE")"
echo "$LAB_DIR" >"$OWNER_FILE"
chmod 700 "$LAB_DIR"

# --- network -------------------------------------------------------------
for ns in $LAB_NAMESPACES; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip netns exec "$NS_ROUTER" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

bridge() {  # name, addresses...
  local br=$1; shift
  ip -n "$NS_ROUTER" link add "$br" type bridge
  ip -n "$NS_ROUTER" link set "$br" up
  for a in "$@"; do ip -n "$NS_ROUTER" addr add "$a" dev "$br" nodad 2>/dev/null || ip -n "$NS_ROUTER" addr add "$a" dev "$br"; done
}
bridge br-visitors 198.51.100.1/24 2001:db8:100::1/64
bridge br-edge 203.0.113.1/24 2001:db8:113::1/64
bridge br-gateways 192.0.2.1/24

attach() {  # namespace, bridge, ipv4, ipv6 (or -)
  local ns=$1 br=$2 v4=$3 v6=$4 port=to-${1#"$NS_PREFIX"-}
  ip -n "$NS_ROUTER" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$NS_ROUTER" link set "$port" master "$br" up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" addr add "$v4/24" dev eth0
  ip -n "$ns" route add default via "${v4%.*}.1"
  if [ "$v6" != - ]; then
    ip -n "$ns" addr add "$v6/64" dev eth0 nodad
    ip -n "$ns" -6 route add default via "${v6%::*}::1"
  fi
}
attach "$NS_VISITOR1" br-visitors "$VISITOR1" "$VISITOR1_6"
attach "$NS_VISITOR2" br-visitors "$VISITOR2" -
attach "$NS_EDGE" br-edge "$EDGE_ADDR" "$EDGE_ADDR6"
attach "$NS_EDGE2" br-edge "$EDGE2_ADDR" -
# With the real data plane, visitor-2 also sends from an address each family's deny list holds.
if [ "$LAB_DATA_PLANE" = envoy ]; then
  ip -n "$NS_VISITOR2" addr add "$DENIED_VISITOR/24" dev eth0
  ip -n "$NS_VISITOR2" addr add "$DENIED_VISITOR_6/64" dev eth0 nodad
  ip -n "$NS_VISITOR2" -6 route add default via 2001:db8:100::1
fi
attach "$NS_GATEWAY1" br-gateways "$GATEWAY1" -
attach "$NS_GATEWAY2" br-gateways "$GATEWAY2" -

# The engine in the root namespace reaches the HAProxy hosts, and nothing else.
ip link add "$ROOT_VETH" type veth peer name to-root netns "$NS_ROUTER"
ip -n "$NS_ROUTER" link set to-root master br-edge up
ip addr add "$ROOT_ADDR/32" dev "$ROOT_VETH"
ip link set "$ROOT_VETH" up
ip route add "$EDGE_ADDR/32" dev "$ROOT_VETH" src "$ROOT_ADDR"
ip route add "$EDGE2_ADDR/32" dev "$ROOT_VETH" src "$ROOT_ADDR"
log "network up: namespaces $LAB_NAMESPACES"

# --- local apt repository (router namespace, edge side) ---------------------
ip netns exec "$NS_ROUTER" python3 -m http.server "$APT_PORT" --bind "$APT_ADDR" --directory "$APT_REPO_DIR" \
  >"$LAB_DIR/apt-http.log" 2>&1 </dev/null &
echo $! >"$PID_DIR/apt-http.pid"

# --- gateway stand-ins: nginx behaving like the Istio gateway's Envoy (docs/stand-ins.md) --
# Only without the real data plane: with it, the nodes answer a NodePort only for a Service with a
# ready endpoint (the node agents' kube-proxy rules), and a port no Service holds is closed.
[ "$LAB_DATA_PLANE" = nginx ] && bash "$LAB_REPO/hack/lab/gateways.sh"

# --- the HAProxy hosts: Debian bookworm booted with systemd as PID 1, an HA pair -------
# systemd-nspawn, not QEMU: KVM guests hang on this kind of machine and TCG is slow (docs/lab.md).
# A fresh root per host from the cached tarball; what makes it this lab's host is written here.
mkdir -p "$LAB_DIR/ssh"
chmod 700 "$LAB_DIR/ssh"
ssh-keygen -q -t ed25519 -N '' -C "source-ip-edge lab" -f "$LAB_DIR/ssh/id_ed25519"
chmod 600 "$LAB_DIR/ssh/id_ed25519"
: >"$LAB_DIR/ssh/known_hosts"

prepare_host() {  # root, hostname, address
  local root=$1 name=$2 addr=$3 key
  mkdir -p "$root"
  tar -C "$root" --numeric-owner -xzf "$ROOTFS_TARBALL"
  rm -f "$root"/etc/apt/sources.list.d/*
  echo "deb [trusted=yes] http://$APT_ADDR:$APT_PORT ./" >"$root/etc/apt/sources.list"
  echo "$name" >"$root/etc/hostname"
  tr -d - </proc/sys/kernel/random/uuid >"$root/etc/machine-id"
  ssh-keygen -q -t ed25519 -N '' -C "$name host key" -f "$root/etc/ssh/ssh_host_ed25519_key"
  # Debian's ssh.service runs sshd; only the pinned key serves, and only keys log in.
  cat >"$root/etc/ssh/sshd_config.d/lab.conf" <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
CONF
  install -d -m 700 "$root/root/.ssh"
  install -m 600 "$LAB_DIR/ssh/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
  key=$(cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_ed25519_key.pub")
  echo "$addr $key" >>"$LAB_DIR/ssh/known_hosts"
}

prepare_host "$HOST_ROOT" lab-edge "$EDGE_ADDR"
prepare_host "$HOST2_ROOT" lab-edge2 "$EDGE2_ADDR"
HOST_KEY=$(cut -d' ' -f1,2 "$HOST_ROOT/etc/ssh/ssh_host_ed25519_key.pub")
HOST2_KEY=$(cut -d' ' -f1,2 "$HOST2_ROOT/etc/ssh/ssh_host_ed25519_key.pub")
boot_started=$(date +%s.%N)
boot_host "$HOST_ROOT" "$NS_EDGE" "$HOST_PID_FILE" "$HOST_CGROUPS_FILE" "$LAB_DIR/host-console.log"
boot_host "$HOST2_ROOT" "$NS_EDGE2" "$HOST2_PID_FILE" "$HOST2_CGROUPS_FILE" "$LAB_DIR/host2-console.log"

# --- checks: every piece answers before we call the lab up -------------------
wait_booted "$EDGE_ADDR" "$HOST_PID_FILE" "$LAB_DIR/host-console.log" "$boot_started"
wait_booted "$EDGE2_ADDR" "$HOST2_PID_FILE" "$LAB_DIR/host2-console.log" "$boot_started"
for ns in "$NS_EDGE" "$NS_EDGE2"; do
  for _ in $(seq 50); do
    ip netns exec "$ns" curl -sf -o /dev/null --max-time 2 "http://$APT_ADDR:$APT_PORT/Packages.gz" && break
    sleep 0.1
  done
  ip netns exec "$ns" curl -sf -o /dev/null --max-time 2 "http://$APT_ADDR:$APT_PORT/Packages.gz"
  [ "$LAB_DATA_PLANE" = nginx ] || continue
  for addr in "$GATEWAY1" "$GATEWAY2"; do
    ip netns exec "$ns" curl -sf -o /dev/null --max-time 2 "http://$addr:$NODE_PORT_STATUS/healthz/ready"
  done
done
for addr in "$EDGE_ADDR" "$EDGE2_ADDR"; do
  ssh_lab "$addr" 'command -v haproxy || command -v keepalived' && { log "the fresh host $addr unexpectedly has haproxy or keepalived" >&2; exit 1; }
done

# --- the Kubernetes control plane: API server, controllers, kwok nodes, istiod's bridge ----------
# CP_ISTIO=stack: no Istio yet; the lab stack installs base, istiod and gateway with Helm from the
# chart repository the control plane serves, and the bridge runs the real istiod for its pod.
# LAB_KUBE_PROXY=1: the real kube-proxy on both nodes (nftables, in the gateway namespaces). It then
# owns the NodePorts: it forwards them to the gateway pods' addresses, which kwok's pods do not
# answer, so the nginx stand-ins no longer see the visitors; off until the gateway pods are real.
kube_proxy_nodes=""
if [ "${LAB_KUBE_PROXY:-0}" = 1 ]; then
  kube_proxy_nodes="lab-node-1:$NS_GATEWAY1:$GATEWAY1 lab-node-2:$NS_GATEWAY2:$GATEWAY2"
fi
CP_ISTIO=stack KUBE_PROXY_NODES=$kube_proxy_nodes bash "$LAB_REPO/hack/lab/control-plane.sh" up
read -r CHART_REPOSITORY CHART_VERSION KUBE_CONTEXT < <(python3 -c '
import json, sys
cp = json.load(open(sys.argv[1]))
print(cp["chartRepository"], cp["chartVersion"], cp["context"])' "$LAB_CP_DIR/control-plane.json")

# --- the gateway's data plane: a node agent per node (kubelet and kube-proxy for the pods the lab runs) --
if [ "$LAB_DATA_PLANE" = envoy ]; then
  # The nodes reach the control plane as a cluster's nodes do: a link from the router to its namespace
  # (the root namespace keeps its own link to the API server, and forwards nothing).
  cp_ns=$NS_PREFIX-cp
  cp_addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["address"])' "$LAB_CP_DIR/control-plane.json")
  cp_net=${cp_addr%.*}
  ip -n "$NS_ROUTER" link add to-cp type veth peer name rt0 netns "$cp_ns"
  ip -n "$NS_ROUTER" addr add "$cp_net.5/30" dev to-cp
  ip -n "$NS_ROUTER" link set to-cp up
  ip -n "$cp_ns" addr add "$cp_net.6/30" dev rt0
  ip -n "$cp_ns" link set rt0 up
  ip -n "$NS_ROUTER" route add "$cp_addr/32" via "$cp_net.6"
  ip -n "$cp_ns" route add 192.0.2.0/24 via "$cp_net.5"
  istio_module=$(. "$LAB_REPO/hack/toolchain/versions.env" && echo "$ISTIO_MODULE_VERSION")
  istio_dir=$( (cd / && go mod download -json "istio.io/istio@$istio_module") |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  # kubeconfig with the API server's address as seen from the nodes (the same as from the root namespace).
  mkdir -p "$LAB_DIR/pods"
  chmod 700 "$LAB_DIR/pods"
  cat >"$LAB_DIR/node-agent.json" <<JSON
{
  "runDir": "$LAB_DIR",
  "kubeconfig": "$LAB_KUBECONFIG",
  "nsPrefix": "$NS_PREFIX",
  "podCidr": "10.0.0.0/24",
  "nodes": {"lab-node-1": {"namespace": "$NS_GATEWAY1", "address": "$GATEWAY1"},
            "lab-node-2": {"namespace": "$NS_GATEWAY2", "address": "$GATEWAY2"}},
  "istiod": {"address": "$cp_addr", "names": ["istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"]},
  "pilotAgent": "$(command -v pilot-agent)",
  "envoy": "$(command -v envoy)",
  "bootstrapTemplate": "$istio_dir/tools/packaging/common/envoy_bootstrap.json",
  "echo": "$LAB_REPO/hack/lab/echo.py"
}
JSON
  i=0
  for ns in "$NS_GATEWAY1" "$NS_GATEWAY2"; do
    i=$((i + 1))
    nsenter --net="/run/netns/$ns" "$LAB_REPO/.venv/bin/python" "$LAB_REPO/hack/lab/node_agent.py" \
      "$LAB_DIR/node-agent.json" "lab-node-$i" </dev/null >>"$LAB_DIR/node-agent-$i.log" 2>&1 &
    echo $! >"$PID_DIR/node-agent-$i.pid"
  done
  for i in 1 2; do
    for _ in $(seq 100); do grep -q "agent up" "$LAB_DIR/node-agent-$i.log" && break; sleep 0.1; done
    grep -q "agent up" "$LAB_DIR/node-agent-$i.log" || { tail "$LAB_DIR/node-agent-$i.log" >&2; log "node agent $i did not start" >&2; exit 1; }
  done
  log "node agents up: gateway pods run pilot-agent and Envoy $(envoy --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*/Clean' | cut -d/ -f1)"
fi

# The VRRP password of the pair, made here; hack/lab/stack.sh sets it as a secret from stdin.
openssl rand -hex 4 | tr -d '\n' >"$LAB_DIR/vrrp-password"
chmod 600 "$LAB_DIR/vrrp-password"

# --- the lab stack's configuration --------------------------------------------
cat >"$LAB_REPO/Pulumi.$LAB_NAME.yaml" <<YAML
# Generated by hack/lab/up.sh for the local lab '$LAB_NAME' (make lab-down removes it).
# The SSH private key is added as a secret by hack/lab/stack.sh once the toolchain is there.
config:
  source-ip-edge:haproxy:
    hosts:
      - name: lab-edge
        address: $EDGE_ADDR
        port: 22
        user: root
        hostKey: $HOST_KEY
      - name: lab-edge2
        address: $EDGE2_ADDR
        port: 22
        user: root
        hostKey: $HOST2_KEY
    # The pair shares $VIP_ADDR (keepalived); the visitors reach the edge there. The interface
    # is found on each host from the subnet (eth0); the VRRP password is a secret (hack/lab/stack.sh).
    vip:
      address: $VIP_ADDR/24
      virtualRouterId: $VRID
    metrics:
      bind: 127.0.0.1:8404
    frontends:
      - {name: http, bind: [":80", "[::]:80"], gatewayPort: http}
      - {name: https, bind: [":443", "[::]:443"], gatewayPort: https}
    balance: roundrobin
  source-ip-edge:gateway:
    nodes:
      - $GATEWAY1
      - $GATEWAY2
    serviceType: NodePort
    nodePorts:
      http: $NODE_PORT_HTTP
      https: $NODE_PORT_HTTPS
      status: $NODE_PORT_STATUS
    externalTrafficPolicy: Local
  source-ip-edge:istio:
    # Installed by the stack (helm.v3.Release base -> istiod -> gateway, awaited) from the lab's
    # chart repository: Istio's charts of the pinned istio.io/istio module, a pre-release version.
    install: true
    version: "$CHART_VERSION"
    chartRepository: $CHART_REPOSITORY
  source-ip-edge:proxyProtocol:
    mode: envoyfilter
    strict: true
  source-ip-edge:access:
    # The lab's visitors are allowed; one address per family is denied (visitor-2 sends from them
    # when the gateway pods run Envoy, which enforces these on live traffic). With the nginx stand-ins
    # only: the lab's API server accepts them through the real istiod's validation webhook, make
    # lab-validate checks them with istioctl, and istiod's generator compiles them (make gateway-test).
    allow: [198.51.100.0/24, "2001:db8:100::/48"]
    deny: [$DENIED_VISITOR/32, "$DENIED_VISITOR_6/128"]
    trustedPeers: [$EDGE_ADDR/32, $EDGE2_ADDR/32, $EDGE_ADDR6/128]
  source-ip-edge:kubernetes:
    # The lab's API server: hack/lab/stack.sh and tests/lab set KUBECONFIG=$LAB_KUBECONFIG.
    context: $KUBE_CONTEXT
YAML

# --- what the tests and the proof read -----------------------------------------
DENIED_VISITORS=""
if [ "$LAB_DATA_PLANE" = envoy ]; then
  DENIED_VISITORS=",
    {\"name\": \"visitor-2 (denied)\", \"namespace\": \"$NS_VISITOR2\", \"address\": \"$DENIED_VISITOR\", \"target\": \"$VIP_ADDR\", \"allowed\": false},
    {\"name\": \"visitor-2 (denied)\", \"namespace\": \"$NS_VISITOR2\", \"address\": \"$DENIED_VISITOR_6\", \"target\": \"$EDGE_ADDR6\", \"allowed\": false}"
fi
cat >"$LAB_OUT/lab.json" <<JSON
{
  "name": "$LAB_NAME",
  "dir": "$LAB_OUT",
  "runDir": "$LAB_DIR",
  "hostRoot": "$HOST_ROOT",
  "hostPidFile": "$HOST_PID_FILE",
  "privateKeyFile": "$LAB_DIR/ssh/id_ed25519",
  "knownHostsFile": "$LAB_DIR/ssh/known_hosts",
  "edge": {"namespace": "$NS_EDGE", "address": "$EDGE_ADDR", "address6": "$EDGE_ADDR6"},
  "hosts": [
    {"name": "lab-edge", "namespace": "$NS_EDGE", "address": "$EDGE_ADDR", "root": "$HOST_ROOT", "pidFile": "$HOST_PID_FILE",
     "switchPort": {"namespace": "$NS_ROUTER", "name": "to-${NS_EDGE#"$NS_PREFIX"-}"}},
    {"name": "lab-edge2", "namespace": "$NS_EDGE2", "address": "$EDGE2_ADDR", "root": "$HOST2_ROOT", "pidFile": "$HOST2_PID_FILE",
     "switchPort": {"namespace": "$NS_ROUTER", "name": "to-${NS_EDGE2#"$NS_PREFIX"-}"}}
  ],
  "vip": "$VIP_ADDR",
  "vrrpPasswordFile": "$LAB_DIR/vrrp-password",
  "visitors": [
    {"name": "visitor-1", "namespace": "$NS_VISITOR1", "address": "$VISITOR1", "target": "$VIP_ADDR"},
    {"name": "visitor-1", "namespace": "$NS_VISITOR1", "address": "$VISITOR1_6", "target": "$EDGE_ADDR6"},
    {"name": "visitor-2", "namespace": "$NS_VISITOR2", "address": "$VISITOR2", "target": "$VIP_ADDR"}$DENIED_VISITORS
  ],
  "gateways": [
    {"name": "gw1", "namespace": "$NS_GATEWAY1", "address": "$GATEWAY1"},
    {"name": "gw2", "namespace": "$NS_GATEWAY2", "address": "$GATEWAY2"}
  ],
  "namespaces": "$LAB_NAMESPACES",
  "dataPlane": "$LAB_DATA_PLANE",
  "nodeAgent": {"config": "$LAB_DIR/node-agent.json", "pods": "$LAB_DIR/pods", "namespacePrefix": "$POD_NS_PREFIX"},
  "kubeconfig": "$LAB_KUBECONFIG",
  "controlPlane": "$LAB_CP_DIR/control-plane.json",
  "gatewayService": {"namespace": "istio-system", "name": "istio-ingressgateway",
                     "nodePorts": {"http": $NODE_PORT_HTTP, "https": $NODE_PORT_HTTPS, "status": $NODE_PORT_STATUS},
                     "secondNodePorts": {"http": $NODE_PORT_HTTP_2, "https": $NODE_PORT_HTTPS_2, "status": $NODE_PORT_STATUS_2}}
}
JSON
touch "$LAB_DIR/fresh" "$LAB_DIR/up"
log "up in $(( $(date +%s) - started ))s: HAProxy hosts $EDGE_ADDR and $EDGE2_ADDR, VIP $VIP_ADDR (ssh root@, key $LAB_DIR/ssh/id_ed25519), gateways $GATEWAY1 $GATEWAY2, API server $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["server"])' "$LAB_CP_DIR/control-plane.json") (KUBECONFIG=$LAB_KUBECONFIG)"
