#!/usr/bin/env bash
# The lab's Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
# and kwok started by kwokctl's binary runtime from the toolchain's binaries (no download), kwok
# nodes whose InternalIPs are the lab's gateway stand-ins, a Helm repository serving Istio's charts
# from the pinned module, Istio's base and istiod charts applied as objects (CP_ISTIO=lab, the
# default) or left to a stack (CP_ISTIO=stack), and the real istiod (pilot-discovery) as the
# process of the istiod pod. The API server calls Istio's webhooks through their Service's
# endpoints (kwok pod IPs made local to this namespace), so validation and gateway injection are
# the real istiod's answers. docs/lab.md describes it; tests/lab/test_control_plane*.py prove it.
#
#   hack/lab/control-plane.sh up     start it (idempotent); needs the toolchain on PATH (make toolchain-env)
#   hack/lab/control-plane.sh down   stop every process it started (by pid), remove its namespace and files
#   hack/lab/control-plane.sh status exit 0 if it is up (every process it started runs), 1 if not
#
# Everything runs in a network namespace of its own ($CP_NS), linked to the root namespace by one
# veth: its fixed ports (6443, istiod's 15010/15012/15014/15017/8080, the chart repository's 8879)
# never meet another lab's.
# The root namespace reaches the API server at https://$CP_ADDR:6443 through $CP_DIR/kubeconfig.
# State lives in $CP_DIR, under the lab's run directory (hack/lab/common.sh), never in the checkout.
# CP_DIR, CP_NS and CP_NET may be set to run a second instance (tests/lab/test_control_plane.py).
#
# KUBE_PROXY_NODES="NAME:NAMESPACE:ADDRESS ...": the real kube-proxy (nftables mode) for each of these
# kwok nodes, run in the node's network namespace (made by the caller, holding ADDRESS), reaching the
# API server over a link of its own to this namespace, as a node reaches its cluster's API server.
# Unset: the nodes are the lab's gateway stand-ins and run no kube-proxy (docs/stand-ins.md).
source "$(dirname "$0")/common.sh"

CP_DIR=${CP_DIR:-$LAB_CP_DIR}
CP_NS=${CP_NS:-$NS_PREFIX-cp}
case "$LAB_NAME" in   # 198.18.0.0/15: the benchmarking range (RFC 2544), used nowhere else in the lab
  lab)      CP_NET=${CP_NET:-198.18.10} ;;
  lab-test) CP_NET=${CP_NET:-198.18.11} ;;
esac
CP_ROOT_VETH=$CP_NS-0
CP_ROOT_ADDR=$CP_NET.1
CP_ADDR=$CP_NET.2
CP_PIDS=$CP_DIR/pids
CP_ISTIO=${CP_ISTIO:-lab}   # lab: the lab installs Istio (adopt path); stack: a stack or helm does
export CP_DIR CP_NS CP_NET CP_ISTIO   # the bridge (below) is this script again, in the background
KWOK_WORKDIR=$CP_DIR/kwok
export KWOK_WORKDIR
CLUSTER=lab
CLUSTER_DIR=$KWOK_WORKDIR/clusters/$CLUSTER
APISERVER_PORT=6443
ISTIO_NAMESPACE=istio-system
POD_CIDR=10.0.0.0/24        # where kwok takes pod IPs from (its default)
SERVICE_CIDR=10.96.0.0/16   # kube-apiserver's default would overlap the pod range
CHARTS_PORT=8879            # the chart repository (Istio's charts, packaged here)
KUBE_PROXY_NODES=${KUBE_PROXY_NODES:-}
KUBE_PROXY_DIR=$CP_DIR/kube-proxy

cp_log() { log "control plane: $*"; }
in_ns() { ip netns exec "$CP_NS" "$@"; }
kubectl_cp() { kubectl --kubeconfig "$CP_DIR/kubeconfig" --request-timeout=20s "$@"; }

# Every process of this control plane: kwokctl's components (their pid files, checked to be ours by
# the work directory on their command line), istiod, and anything else left in the namespace.
cp_pids() {
  local f pid
  for f in "$CLUSTER_DIR"/pids/*.pid "$CP_PIDS"/*.pid "$CP_DIR/istiod.pid" "$CP_DIR/istiod-watch.pid"; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    running "$pid" && tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF -- "$CP_DIR" && echo "$pid"
  done
  ns_exists "$CP_NS" && ip netns pids "$CP_NS"
  true
} 2>/dev/null

is_up() {
  local f
  [ -f "$CP_DIR/up" ] && ns_exists "$CP_NS" || return 1
  for f in "$CLUSTER_DIR"/pids/*.pid "$CP_PIDS"/*.pid; do
    [ -s "$f" ] && running "$(cat "$f")" || return 1
  done
}

down() {
  local pids bridge_pid
  # The bridge first (it stops istiod on TERM), so it cannot start istiod again meanwhile.
  bridge_pid=$(cat "$CP_PIDS/istiod-bridge.pid" 2>/dev/null || true)
  if [ -n "$bridge_pid" ] && running "$bridge_pid"; then
    kill -TERM "$bridge_pid" 2>/dev/null || true
    for _ in $(seq 150); do running "$bridge_pid" || break; sleep 0.1; done
  fi
  mapfile -t pids < <(cp_pids | grep -E '^[0-9]+$' | sort -un)
  stop_pids 100 "${pids[@]}"
  kube_proxy_cleanup
  if ns_exists "$CP_NS"; then ip netns del "$CP_NS"; fi
  ip link del "$CP_ROOT_VETH" 2>/dev/null || true   # normally gone with its peer's namespace
  rm -rf --one-file-system "$CP_DIR"
  cp_log "down"
}

# Istio's charts from the pinned istio.io/istio module (manifests/charts), packaged and indexed by
# helm into a chart repository served in the namespace, as users get them from Istio's. Their
# version: the module's VERSION file, with the commit as a pre-release (1.31.0-dev.eed52ebb66ad),
# since a pseudo-version is no Istio release. Nothing is copied into the checkout.
serve_charts() {
  local module_version module_dir version
  module_version=$(. "$LAB_REPO/hack/toolchain/versions.env" && echo "$ISTIO_MODULE_VERSION")
  module_dir=$( (cd / && go mod download -json "istio.io/istio@$module_version") |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  version="$(cat "$module_dir/VERSION").0-dev.${module_version##*-}"
  mkdir -p "$CP_DIR/charts/repo"
  for chart in base istio-control/istio-discovery gateway; do
    HELM_CACHE_HOME=$CP_DIR/charts/helm HELM_CONFIG_HOME=$CP_DIR/charts/helm HELM_DATA_HOME=$CP_DIR/charts/helm \
      helm package "$module_dir/manifests/charts/$chart" --version "$version" --app-version "$version" \
      --destination "$CP_DIR/charts/repo" >/dev/null
  done
  HELM_CACHE_HOME=$CP_DIR/charts/helm HELM_CONFIG_HOME=$CP_DIR/charts/helm HELM_DATA_HOME=$CP_DIR/charts/helm \
    helm repo index "$CP_DIR/charts/repo" --url "http://$CP_ADDR:$CHARTS_PORT"
  echo "$version" >"$CP_DIR/charts/version"
  in_ns python3 -m http.server "$CHARTS_PORT" --bind "$CP_ADDR" --directory "$CP_DIR/charts/repo" \
    </dev/null >"$CP_DIR/charts/http.log" 2>&1 &
  echo $! >"$CP_PIDS/charts-http.pid"
  wait_for 100 "the chart repository answering on $CP_ADDR:$CHARTS_PORT" \
    curl -sf --max-time 2 -o /dev/null "http://$CP_ADDR:$CHARTS_PORT/index.yaml"
}

wait_for() {  # tenths of a second, description, command...
  local tenths=$1 what=$2; shift 2
  for _ in $(seq "$tenths"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$@" >&2 || true
  cp_log "$what did not happen in $((tenths / 10))s" >&2
  return 1
}

# istiod as the process of the istiod pod: started once the istiod chart's pod is Running and its
# istio-sidecar-injector ConfigMap exists (istiod reads the injector's templates at start and
# skips the injector without them), stopped when the pod is gone (helm uninstall, pulumi destroy).
# Its pid file is outside $CP_PIDS: istiod being down is a state of the cluster, not a fault.
# With the real gateway data plane (the stock Envoy, docs/stand-ins.md), istiod leaves out Istio's
# metadata exchange filters (`istio.metadata_exchange` on clusters and TCP listeners, the HTTP peer
# metadata filter) and its ALPN override filter (`istio.alpn`), which only Istio's proxy build has.
# The istiod chart's `pilot.env` sets the same for a user.
ISTIOD_DATA_PLANE_ENV=()
[ "$LAB_DATA_PLANE" = envoy ] && ISTIOD_DATA_PLANE_ENV=(PILOT_ENABLE_METADATA_EXCHANGE=false PILOT_ENABLE_ALPN_FILTER=false)

start_istiod() {  # pod name
  mkdir -p "$CP_DIR/istiod"   # its DNS certificates go below its working directory
  (
    cd "$CP_DIR/istiod"
    # The environment the istiod chart gives its container, with the kwok pod's name.
    POD_NAMESPACE=$ISTIO_NAMESPACE POD_NAME=$1 SERVICE_ACCOUNT=istiod REVISION=default CLUSTER_ID=Kubernetes \
      PILOT_CERT_PROVIDER=istiod JWT_POLICY=first-party-jwt \
      exec env "${ISTIOD_DATA_PLANE_ENV[@]}" ip netns exec "$CP_NS" pilot-discovery discovery --kubeconfig "$CLUSTER_DIR/kubeconfig.yaml" \
      --grpcAddr :15010 --httpsAddr :15017 --httpAddr 127.0.0.1:8080 --monitoringAddr :15014 \
      --domain cluster.local --keepaliveMaxServerConnectionAge 30m --log_output_level default:info
  ) </dev/null >>"$CP_DIR/istiod.log" 2>&1 &
  echo $! >"$CP_DIR/istiod.pid"
  cp_log "istiod started (pid $!) for pod $1"
}

stop_istiod() {
  local pid
  pid=$(cat "$CP_DIR/istiod.pid" 2>/dev/null || true)
  [ -n "$pid" ] && running "$pid" || return 0
  kill -TERM "$pid"
  for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
  running "$pid" && kill -KILL "$pid"
  rm -f "$CP_DIR/istiod.pid"
  cp_log "istiod stopped (pid $pid): its pod is gone"
}

reconcile_istiod() {
  local pod injector pid
  pod=$(kubectl_cp -n "$ISTIO_NAMESPACE" get pods -l app=istiod --field-selector=status.phase=Running \
    -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
  injector=$(kubectl_cp -n "$ISTIO_NAMESPACE" get configmap istio-sidecar-injector -o name 2>/dev/null || true)
  pid=$(cat "$CP_DIR/istiod.pid" 2>/dev/null || true)
  if [ -n "$pod" ] && [ -n "$injector" ]; then
    { [ -n "$pid" ] && running "$pid"; } || start_istiod "$pod"
  else
    stop_istiod
  fi
}

# Wakes on every change of an istiod pod (a kubectl watch prints a line for each), and every 10 s
# regardless (the injector ConfigMap, which Helm makes before the pod, is not watched). Polling
# with two kubectl runs a second took about 13% of a CPU for as long as the lab was up (167 ms of
# CPU per pair of runs); this takes about 2% (1.06 s of CPU in a minute of an idle lab). The watch
# ends with its request timeout or the API server; the next one starts a second later. Its pid
# file is outside $CP_PIDS (it comes and goes); down stops it by pid with the rest.
bridge() {
  local watch_pid="" rc
  trap 'stop_istiod; [ -z "$watch_pid" ] || kill "$watch_pid" 2>/dev/null; exit 0' TERM INT
  while :; do
    if [ -z "$watch_pid" ] || ! running "$watch_pid"; then
      exec 3< <(exec kubectl --kubeconfig "$CP_DIR/kubeconfig" --request-timeout=5m -n "$ISTIO_NAMESPACE" \
        get pods -l app=istiod --watch -o name 2>/dev/null)
      watch_pid=$!
      echo "$watch_pid" >"$CP_DIR/istiod-watch.pid"
    fi
    reconcile_istiod
    rc=0
    read -r -t 10 -u 3 _ || rc=$?
    if [ "$rc" -eq 0 ]; then
      for _ in $(seq 50); do read -r -t 0.2 -u 3 _ || break; done   # a burst of changes, read as one
    elif [ "$rc" -le 128 ]; then
      sleep 1   # the watch ended
    fi
  done
}

# kube-proxy leaves its nftables tables behind when it stops (a node's rules outlive a restart of
# it): down removes them from each node's namespace, with the link to this namespace.
kube_proxy_cleanup() {
  local ns
  [ -s "$KUBE_PROXY_DIR/namespaces" ] || return 0
  while read -r ns; do
    ns_exists "$ns" || continue
    for family in ip ip6; do ip netns exec "$ns" nft delete table "$family" kube-proxy 2>/dev/null || true; done
    ip -n "$ns" link del to-cp 2>/dev/null || true
  done <"$KUBE_PROXY_DIR/namespaces"
}

# One kube-proxy per node of KUBE_PROXY_NODES, in the node's namespace. The link: a /30 of CP_NET per
# node (.4n+1 here, .4n+2 in the node), and a route in the node to the API server's address only.
# nftables mode: GA since Kubernetes 1.33 and what kube-proxy's documentation recommends on kernels
# from 5.13 (iptables is still the default mode); NodePorts and externalTrafficPolicy behave the
# same in both. The config leaves the machine's conntrack limits alone (maxPerCore 0, timeouts 0).
start_kube_proxies() {
  local entry name ns addr i=0 cp_side node_side
  [ -n "$KUBE_PROXY_NODES" ] || return 0
  mkdir -p "$KUBE_PROXY_DIR"
  : >"$KUBE_PROXY_DIR/namespaces"
  for entry in $KUBE_PROXY_NODES; do
    IFS=: read -r name ns addr <<<"$entry"
    i=$((i + 1)); cp_side=$CP_NET.$((4 * i + 1)); node_side=$CP_NET.$((4 * i + 2))
    ns_exists "$ns" || { cp_log "KUBE_PROXY_NODES: no network namespace $ns for $name" >&2; return 1; }
    echo "$ns" >>"$KUBE_PROXY_DIR/namespaces"
    ip -n "$CP_NS" link add "kp-$i" type veth peer name to-cp netns "$ns"
    ip -n "$CP_NS" addr add "$cp_side/30" dev "kp-$i"
    ip -n "$CP_NS" link set "kp-$i" up
    ip -n "$ns" addr add "$node_side/30" dev to-cp
    ip -n "$ns" link set to-cp up
    ip -n "$ns" route add "$CP_ADDR/32" via "$cp_side" dev to-cp
    cat >"$KUBE_PROXY_DIR/$name.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: $name
clientConnection:
  kubeconfig: $CP_DIR/kubeconfig
clusterCIDR: $POD_CIDR
bindAddress: $addr
healthzBindAddress: $addr:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [primary]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
YAML
    ip netns exec "$ns" kube-proxy --config "$KUBE_PROXY_DIR/$name.yaml" --v=2 \
      </dev/null >"$KUBE_PROXY_DIR/$name.log" 2>&1 &
    echo $! >"$CP_PIDS/kube-proxy-$name.pid"
  done
  for entry in $KUBE_PROXY_NODES; do
    IFS=: read -r name ns addr <<<"$entry"
    # /healthz answers 200 once its first sync of the Services and EndpointSlices is written.
    wait_for 600 "kube-proxy for $name healthy" \
      ip netns exec "$ns" curl -sf --max-time 2 -o /dev/null "http://$addr:10256/healthz"
  done
  cp_log "kube-proxy (nftables) running for ${KUBE_PROXY_NODES}"
}

# Like `kind create cluster`: a failed `up` shows the components' logs and removes what it started.
up_failed() {
  local f
  for f in "$CLUSTER_DIR"/logs/*.log "$CP_DIR/bridge.log" "$CP_DIR/istiod.log" "$KUBE_PROXY_DIR"/*.log; do
    [ -s "$f" ] && { echo "--- $f (last lines)"; tail -n 15 "$f"; } >&2
  done
  cp_log "up failed; removing what it started" >&2
  down
}

up() {
  local b missing=() started node i addr
  for b in $CP_BINARIES ${KUBE_PROXY_NODES:+kube-proxy nft}; do command -v "$b" >/dev/null || missing+=("$b"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    cp_log "not on PATH: ${missing[*]} (eval \"\$(make -s toolchain-env)\" first)" >&2
    exit 1
  fi
  if is_up; then cp_log "already up ($CP_DIR)"; return 0; fi
  if [ -e "$CP_DIR" ] || ns_exists "$CP_NS"; then cp_log "removing the remains of an earlier one"; down; fi
  started=$(date +%s.%N)
  trap up_failed EXIT
  mkdir -p "$CP_DIR" "$CP_PIDS"
  chmod 700 "$CP_DIR"

  ip netns add "$CP_NS"
  ip -n "$CP_NS" link set lo up
  ip link add "$CP_ROOT_VETH" type veth peer name eth0 netns "$CP_NS"
  ip addr add "$CP_ROOT_ADDR/30" dev "$CP_ROOT_VETH"
  ip link set "$CP_ROOT_VETH" up
  ip -n "$CP_NS" addr add "$CP_ADDR/30" dev eth0
  ip -n "$CP_NS" link set eth0 up
  # kube-apiserver picks its advertise address from the default route's interface.
  ip -n "$CP_NS" route add default via "$CP_ROOT_ADDR"
  # Webhooks: kwok's pods are not real, but their IPs are local here (an AnyIP route), so the
  # API server's call to a webhook Service's endpoint (aggregator routing: pod IP and targetPort,
  # no kube-proxy needed) reaches whatever listens on that port in this namespace: the real
  # istiod on 15017. The istiod chart's Service, webhooks and certificate stay as users get them.
  ip -n "$CP_NS" route add local "$POD_CIDR" dev lo

  # The address is on eth0 before kwokctl runs: it puts the namespace's addresses in the API
  # server's certificate. --kubeconfig '': leave ~/.kube/config alone.
  if ! in_ns timeout 240 kwokctl create cluster --name "$CLUSTER" --runtime binary \
      --kube-apiserver-port "$APISERVER_PORT" --kubeconfig '' --wait 60s \
      --extra-args "kube-apiserver=service-cluster-ip-range=$SERVICE_CIDR" \
      --extra-args kube-apiserver=enable-aggregator-routing=true \
      --etcd-binary "$(command -v etcd)" \
      --kube-apiserver-binary "$(command -v kube-apiserver)" \
      --kube-controller-manager-binary "$(command -v kube-controller-manager)" \
      --kube-scheduler-binary "$(command -v kube-scheduler)" \
      --kwok-controller-binary "$(command -v kwok)" \
      >"$CP_DIR/kwokctl.log" 2>&1; then
    cat "$CP_DIR/kwokctl.log" >&2
    cp_log "kwokctl create cluster failed (log above)" >&2
    exit 1
  fi
  # kwokctl's kubeconfig names 127.0.0.1, true inside the namespace; ours is for the root namespace.
  sed "s#https://127.0.0.1:$APISERVER_PORT#https://$CP_ADDR:$APISERVER_PORT#" \
    "$CLUSTER_DIR/kubeconfig.yaml" >"$CP_DIR/kubeconfig"
  chmod 600 "$CP_DIR/kubeconfig"
  wait_for 300 "the API server answering on $CP_ADDR:$APISERVER_PORT" kubectl_cp get --raw /readyz
  cp_log "kwok cluster up: $(kubectl_cp version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"

  # kwok nodes standing for the gateway's nodes: their InternalIPs are the gateway stand-ins'.
  i=0
  for addr in "$GATEWAY1" "$GATEWAY2"; do
    i=$((i + 1)); node=lab-node-$i
    kubectl_cp apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: $node, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
spec: {}
YAML
    kubectl_cp patch node "$node" --subresource=status --type=merge \
      -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$addr\"},{\"type\":\"Hostname\",\"address\":\"$node\"}]}}" >/dev/null
  done
  wait_for 600 "kwok nodes Ready" kubectl_cp wait --for=condition=Ready node --all --timeout=5s
  start_kube_proxies

  # Istio. CP_ISTIO=lab (default): installed by the lab outside any stack (the stack adopts it,
  # istio.install: false): the base and istiod charts of the pinned module as embedded in
  # istioctl, minimal profile, applied as plain objects. CP_ISTIO=stack: nothing; a stack (or
  # helm) installs the charts from the lab's repository. Either way the istiod Deployment's pod is
  # a kwok pod and the real istiod is the process the bridge below runs for it.
  kubectl_cp create namespace "$ISTIO_NAMESPACE" >/dev/null
  if [ "$CP_ISTIO" = lab ]; then
    istioctl manifest generate --set profile=minimal >"$CP_DIR/istio.yaml" 2>"$CP_DIR/istioctl.log"
    kubectl_cp apply --server-side -f "$CP_DIR/istio.yaml" >/dev/null
    kubectl_cp wait --for=condition=Established crd --all --timeout=60s >/dev/null
  fi
  bash "$LAB_REPO/hack/lab/control-plane.sh" bridge "$CP_DIR" </dev/null >>"$CP_DIR/bridge.log" 2>&1 &
  echo $! >"$CP_PIDS/istiod-bridge.pid"
  if [ "$CP_ISTIO" = lab ] && ! wait_for 1200 "istiod ready (http://127.0.0.1:8080/ready in $CP_NS)" \
      in_ns curl -sf --max-time 2 http://127.0.0.1:8080/ready; then
    exit 1
  fi

  serve_charts

  cat >"$CP_DIR/control-plane.json" <<JSON
{
  "namespace": "$CP_NS",
  "address": "$CP_ADDR",
  "kubeconfig": "$CP_DIR/kubeconfig",
  "context": "$(kubectl --kubeconfig "$CP_DIR/kubeconfig" config current-context)",
  "server": "https://$CP_ADDR:$APISERVER_PORT",
  "kwokWorkdir": "$KWOK_WORKDIR",
  "istio": "$CP_ISTIO",
  "istiod": {"pidFile": "$CP_DIR/istiod.pid", "grpc": "$CP_ADDR:15010", "webhook": "$CP_ADDR:15017", "log": "$CP_DIR/istiod.log"},
  "nodes": {"lab-node-1": "$GATEWAY1", "lab-node-2": "$GATEWAY2"},
  "kubeProxyNodes": "$KUBE_PROXY_NODES",
  "chartRepository": "http://$CP_ADDR:$CHARTS_PORT",
  "chartVersion": "$(cat "$CP_DIR/charts/version")"
}
JSON
  touch "$CP_DIR/up"
  trap - EXIT
  cp_log "up in $(python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$started")s: API server https://$CP_ADDR:$APISERVER_PORT (kubeconfig $CP_DIR/kubeconfig), istiod $CP_ADDR:15010"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) is_up ;;
  bridge) bridge ;;   # internal: run by `up` in the background, with $CP_DIR on its command line
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
