# shellcheck shell=bash disable=SC2034  # every setting here is read by the scripts that source this file
# Shared settings of the local lab. Sourced by lab/*.sh; LAB_NAME selects an instance.
#
# Every address is from a documentation range and lives only inside network
# namespaces the lab creates. The root namespace gets one veth and one /32
# route, to the lab's HAProxy host, so the Pulumi engine here can SSH to it.
set -euo pipefail

LAB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB_NAME=${LAB_NAME:-lab}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/source-ip-edge}
LAB_CACHE=$CACHE_DIR/lab
ROOTFS_TARBALL=$LAB_CACHE/bookworm-minbase-systemd-sshd.tar.gz   # boots systemd; the name changes with what is in it
# What the hosts' own apt installs: the provisioning's packages (components/haproxy_host/
# install.sh) and keepalived for an HA pair. The local apt repository carries these and their
# dependencies, nothing else; its name says which, so a new list builds a new one.
HOST_PACKAGES="haproxy socat keepalived"
APT_REPO_DIR=$LAB_CACHE/apt-${HOST_PACKAGES// /-}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# Live state (host roots, pid files, keys, logs, the stand-ins' files) never lives in the checkout:
# a recursive walk of the worktree (cp -r, grep -r, an indexer) must stay finite while the lab is up.
# It goes under /run because it lives exactly as long as the namespaces and processes it describes
# (a reboot clears both); the name carries a hash of the checkout's path, so checkouts never share it.
# A host root takes about 180 MB: where /run is a small tmpfs, set LAB_RUN_BASE to a disk directory.
LAB_RUN_BASE=${LAB_RUN_BASE:-/run/source-ip-edge}
LAB_DIR=$LAB_RUN_BASE/$LAB_NAME-$(printf %s "$LAB_REPO" | sha256sum | cut -c1-8)
# hack/lab/down.sh with ABANDONED_LAB_DIR removes another checkout's lab that has no process left
# (refuse_foreign_lab, below): every path that follows is then that lab's.
LAB_DIR=${ABANDONED_LAB_DIR:-$LAB_DIR}
HOST_ROOT=$LAB_DIR/root
HOST_PID_FILE=$LAB_DIR/host.pid   # systemd-nspawn's pid: the HAProxy host is stopped through it
HOST_CGROUPS_FILE=$LAB_DIR/host.cgroups   # the cgroups it runs in (host_cgroups, below)
# The second HAProxy host of the HA pair: the same, with a 2.
HOST2_ROOT=$LAB_DIR/root2
HOST2_PID_FILE=$LAB_DIR/host2.pid
HOST2_CGROUPS_FILE=$LAB_DIR/host2.cgroups
PID_DIR=$LAB_DIR/pids             # every other process the lab started
# The lab's Kubernetes control plane (hack/lab/control-plane.sh) and the kubeconfig that reaches it from
# the root namespace: what the lab stack's kubernetes provider uses (KUBECONFIG, hack/lab/stack.sh).
LAB_CP_DIR=$LAB_DIR/control-plane
LAB_KUBECONFIG=$LAB_CP_DIR/kubeconfig
# What the control plane runs, from the toolchain (make toolchain-env puts them on PATH): binaries
# kwokctl runs; istioctl renders Istio's charts, kubectl applies them, pilot-discovery is istiod;
# helm packages the charts for the lab's chart repository, go finds the module holding them.
CP_BINARIES="etcd kube-apiserver kube-controller-manager kube-scheduler kwok kwokctl kubectl istioctl pilot-discovery helm go"
# The gateway's data plane. envoy: each gateway pod the API server holds runs Istio's pilot-agent and
# the stock Envoy in a network namespace at its pod IP, started by a node agent per node
# (hack/lab/node_agent.py), which also forwards the NodePorts like kube-proxy; the echo backend
# behind it is installed by hack/lab/app.sh. nginx: only the gateway stand-ins (docs/stand-ins.md).
# The lab-test instance keeps nginx until its tests run on the real data plane.
case "$LAB_NAME" in
  lab) LAB_DATA_PLANE=${LAB_DATA_PLANE:-envoy} ;;
  *)   LAB_DATA_PLANE=${LAB_DATA_PLANE:-nginx} ;;
esac
DATA_PLANE_BINARIES="pilot-agent envoy"
ECHO_IMAGE=lab.invalid/echo       # the image the node agents run as hack/lab/echo.py
# Plain files that users and tests read (lab.json, the rendered Kubernetes YAML); nothing live.
LAB_OUT=$LAB_REPO/build/$LAB_NAME

# EDGE_ADDR and EDGE2_ADDR: the two HAProxy hosts; VIP_ADDR: the address they share (keepalived),
# which the visitors reach; VRID: its VRRP virtual router id. LAB_NS_PREFIX gives the namespaces other
# names, for tests of these scripts that must not meet a running lab (tests/lab/test_lab_scripts.py).
case "$LAB_NAME" in
  lab)      NS_PREFIX=${LAB_NS_PREFIX:-sie};  EDGE_ADDR=203.0.113.10; EDGE_ADDR6=2001:db8:113::10; EDGE2_ADDR=203.0.113.20; VIP_ADDR=203.0.113.100; VRID=51 ;;
  lab-test) NS_PREFIX=${LAB_NS_PREFIX:-siet}; EDGE_ADDR=203.0.113.11; EDGE_ADDR6=2001:db8:113::11; EDGE2_ADDR=203.0.113.21; VIP_ADDR=203.0.113.101; VRID=52 ;;
  *) echo "LAB_NAME must be lab or lab-test" >&2; exit 2 ;;
esac

NS_ROUTER=$NS_PREFIX-rt
NS_EDGE=$NS_PREFIX-edge
NS_EDGE2=$NS_PREFIX-edge2
NS_VISITOR1=$NS_PREFIX-v1
NS_VISITOR2=$NS_PREFIX-v2
NS_GATEWAY1=$NS_PREFIX-gw1
NS_GATEWAY2=$NS_PREFIX-gw2
LAB_NAMESPACES="$NS_ROUTER $NS_EDGE $NS_EDGE2 $NS_VISITOR1 $NS_VISITOR2 $NS_GATEWAY1 $NS_GATEWAY2"
POD_NS_PREFIX=$NS_PREFIX-pod-     # the pods' network namespaces: <prefix><hash of the pod's uid>
ROOT_VETH=$NS_PREFIX-0            # the root namespace's end of the link to the lab
ROOT_ADDR=203.0.113.254           # its address (a /32), the source of the engine's SSH

VISITOR1=198.51.100.7
VISITOR1_6=2001:db8:100::7
VISITOR2=198.51.100.8
DENIED_VISITOR=198.51.100.66      # in the lab stack's access.deny (one per family)
DENIED_VISITOR_6=2001:db8:100::66
GATEWAY1=192.0.2.50
GATEWAY2=192.0.2.51
APT_ADDR=203.0.113.1              # the router's address on the edge link serves the apt repo
APT_PORT=8080
NODE_PORT_HTTP=30080
NODE_PORT_HTTPS=30443
NODE_PORT_STATUS=30021
# A second set the stand-ins also answer on: where a gateway moves when its Service changes (a
# gateway.api switch cannot give the new gateway's Service NodePorts the old one still holds).
NODE_PORT_HTTP_2=31080
NODE_PORT_HTTPS_2=31443
NODE_PORT_STATUS_2=31021

# Namespace names are per machine, not per checkout: the owner file says which checkout's lab they are.
OWNER_FILE=$LAB_RUN_BASE/$LAB_NAME.owner

log() { echo "lab[$LAB_NAME]: $*"; }
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
# kill -0 succeeds on a zombie too; a zombie is already done.
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# Stops processes by pid: TERM, up to TENTHS tenths of a second for them to end, then KILL.
stop_pids() {  # tenths, pid...
  local tenths=$1 alive p
  shift
  [ "$#" -gt 0 ] || return 0
  log "stopping processes $*"
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq "$tenths"); do
    alive=()
    for p in "$@"; do running "$p" && alive+=("$p"); done
    [ "${#alive[@]}" -eq 0 ] && return 0
    sleep 0.1
  done
  log "killing ${alive[*]}"
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

# The processes of the lab whose run directory is $1 that still run: the pids its pid files name
# (the hosts' systemd-nspawn, the stand-ins, the control plane's, kwok's; not the files inside the
# host roots), anything in the hosts' cgroups, and anything in the lab's namespaces.
lab_processes() {  # run directory
  local dir=$1 f pid
  while IFS= read -r f; do
    pid=$(cat "$f" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] && running "$pid" && echo "$pid"
  done < <(find "$dir" -xdev \( -path "$dir/root" -o -path "$dir/root2" \) -prune -o -type f -name '*.pid' -print)
  for f in "$dir/host.cgroups" "$dir/host2.cgroups"; do
    [ -s "$f" ] || continue
    while read -r cgroup; do
      [ -d "$cgroup" ] && find "$cgroup" -name cgroup.procs -exec cat {} +
    done <"$f"
  done
  for ns in $LAB_NAMESPACES "$NS_PREFIX-cp"; do ns_exists "$ns" && ip netns pids "$ns"; done
  true
} 2>/dev/null

# Refuses to touch a lab of the same name that another checkout has up. A lab none of whose
# processes runs any more (its run was killed before its make lab-down, which a
# CI machine's next run must survive) is only in the way: its remains are removed.
refuse_foreign_lab() {
  local owner
  owner=$(cat "$OWNER_FILE" 2>/dev/null || true)
  if [ -n "$owner" ] && [ "$owner" != "$LAB_DIR" ] && [ -f "$owner/up" ]; then
    if [ -z "$(lab_processes "$owner")" ]; then
      log "the lab '$LAB_NAME' from $owner has no process left: removing its remains"
      ABANDONED_LAB_DIR=$owner bash "$LAB_REPO/hack/lab/down.sh"
      return 0
    fi
    log "a lab '$LAB_NAME' from $owner is up on the lab machine: run make lab-down in that checkout first" >&2
    exit 1
  fi
}

# The cgroups a lab host's container runs in, one per hierarchy systemd uses (name=systemd and the
# unified one), below this shell's own. systemd-nspawn --keep-unit puts a container, split into
# payload/ and supervisor/, in the cgroup nspawn was started in: without a cgroup of its own,
# two hosts started from one shell would share one systemd tree.
host_cgroups() {  # container name
  awk -v name="$1" '
    FILENAME == "/proc/self/cgroup" {
      split($0, f, ":"); if (f[2] == "") unified = f[3]; if (f[2] == "name=systemd") legacy = f[3]; next
    }
    $3 == "cgroup2" { dir = $2 "/" unified "/" name }
    $3 == "cgroup" && $4 ~ /(^|,)name=systemd(,|$)/ { dir = $2 "/" legacy "/" name }
    dir != "" { gsub(/\/+/, "/", dir); print dir; dir = "" }
  ' /proc/self/cgroup /proc/self/mounts
}

# Mount points under $1, deepest first.
mounts_under() {
  awk -v root="$1" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
