#!/usr/bin/env bash
# Brings up the local lab (idempotent): network namespaces, a Debian HAProxy host
# reached over real SSH, two PROXY-protocol gateway stand-ins (nginx), visitors,
# a local apt repository, and the lab stack's Pulumi.<LAB_NAME>.yaml.
#
#   visitors 198.51.100.7 (+2001:db8:100::7), 198.51.100.8 ─┐
#   HAProxy host 203.0.113.10 (+2001:db8:113::10), sshd ────┼── router ns (bridges, apt repo on 203.0.113.1:8080)
#   gateways 192.0.2.50, 192.0.2.51 (nginx proxy_protocol) ─┘        │
#   root ns: veth 203.0.113.254/32, route to the HAProxy host only ──┘
source "$(dirname "$0")/common.sh"

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

lab_is_up() {
  [ -f "$LAB_DIR/up" ] || return 1
  for ns in $LAB_NAMESPACES; do ns_exists "$ns" || return 1; done
  for f in "$PID_DIR"/*.pid; do pid_alive "$f" || return 1; done
}

refuse_foreign_lab
if lab_is_up; then
  log "already up ($LAB_DIR)"
  exit 0
fi
leftovers=no
for ns in $LAB_NAMESPACES; do ns_exists "$ns" && leftovers=yes; done
{ [ -e "$LAB_DIR" ] || ip link show "$ROOT_VETH" >/dev/null 2>&1; } && leftovers=yes
if [ "$leftovers" = yes ]; then
  log "removing the remains of an incomplete lab"
  bash "$LAB_REPO/lab/down.sh"
fi
[ -s "$ROOTFS_TARBALL" ] || bash "$LAB_REPO/lab/cache-rootfs.sh"

started=$(date +%s)
mkdir -p "$LAB_DIR" "$PID_DIR" "$(dirname "$OWNER_FILE")"
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
attach "$NS_GATEWAY1" br-gateways "$GATEWAY1" -
attach "$NS_GATEWAY2" br-gateways "$GATEWAY2" -

# The engine in the root namespace reaches the HAProxy host, and nothing else.
ip link add "$ROOT_VETH" type veth peer name to-root netns "$NS_ROUTER"
ip -n "$NS_ROUTER" link set to-root master br-edge up
ip addr add "$ROOT_ADDR/32" dev "$ROOT_VETH"
ip link set "$ROOT_VETH" up
ip route add "$EDGE_ADDR/32" dev "$ROOT_VETH" src "$ROOT_ADDR"
log "network up: namespaces $LAB_NAMESPACES"

# --- local apt repository (router namespace, edge side) ---------------------
ip netns exec "$NS_ROUTER" python3 -m http.server "$APT_PORT" --bind "$APT_ADDR" --directory "$APT_REPO_DIR" \
  >"$LAB_DIR/apt-http.log" 2>&1 </dev/null &
echo $! >"$PID_DIR/apt-http.pid"

# --- gateway stand-ins: nginx speaking PROXY protocol like the Istio gateway --
mkdir -p "$LAB_DIR/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=gateway.lab.invalid" -keyout "$LAB_DIR/tls/gateway.key" -out "$LAB_DIR/tls/gateway.crt" 2>/dev/null
for gw in gw1:"$NS_GATEWAY1":"$GATEWAY1" gw2:"$NS_GATEWAY2":"$GATEWAY2"; do
  IFS=: read -r name ns addr <<<"$gw"
  dir=$LAB_DIR/$name
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
# Gateway stand-in $name: answers with the client address from the PROXY header.
worker_processes 1;
pid $PID_DIR/$name-nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    default_type text/plain;
    add_header X-Lab-Gateway $name always;
    server {
        listen $addr:$NODE_PORT_HTTP proxy_protocol;
        listen $addr:$NODE_PORT_HTTPS ssl proxy_protocol;
        ssl_certificate $LAB_DIR/tls/gateway.crt;
        ssl_certificate_key $LAB_DIR/tls/gateway.key;
        location / { return 200 "\$proxy_protocol_addr\n"; }
    }
    server {
        listen $addr:$NODE_PORT_STATUS;
        location = /healthz/ready { return 200 "ready\n"; }
    }
}
CONF
  mkdir -p "$dir/tmp"
  ip netns exec "$ns" nginx -q -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log"
done

# --- the HAProxy host: a fresh Debian root with sshd, in its own namespace ----
mkdir -p "$HOST_ROOT"
tar -C "$HOST_ROOT" --numeric-owner -xzf "$ROOTFS_TARBALL"
rm -f "$HOST_ROOT"/etc/apt/sources.list.d/*
echo "deb [trusted=yes] http://$APT_ADDR:$APT_PORT ./" >"$HOST_ROOT/etc/apt/sources.list"
echo "lab-edge" >"$HOST_ROOT/etc/hostname"
ssh-keygen -q -t ed25519 -N '' -C "lab-edge host key" -f "$HOST_ROOT/etc/ssh/ssh_host_ed25519_key"
mkdir -p "$LAB_DIR/ssh"
chmod 700 "$LAB_DIR/ssh"
ssh-keygen -q -t ed25519 -N '' -C "source-ip-edge lab" -f "$LAB_DIR/ssh/id_ed25519"
chmod 600 "$LAB_DIR/ssh/id_ed25519"
install -d -m 700 "$HOST_ROOT/root/.ssh"
install -m 600 "$LAB_DIR/ssh/id_ed25519.pub" "$HOST_ROOT/root/.ssh/authorized_keys"
install -d -m 755 "$HOST_ROOT/run/sshd"
HOST_KEY=$(cut -d' ' -f1,2 "$HOST_ROOT/etc/ssh/ssh_host_ed25519_key.pub")
echo "$EDGE_ADDR $HOST_KEY" >"$LAB_DIR/ssh/known_hosts"
mount -t proc proc "$HOST_ROOT/proc"
# A private devpts instance, as a real host has (apt logs through a pty); no host devices.
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$HOST_ROOT/dev/pts"

ip netns exec "$NS_EDGE" chroot "$HOST_ROOT" /usr/sbin/sshd \
  -o ListenAddress="$EDGE_ADDR" -o ListenAddress="[$EDGE_ADDR6]" \
  -o HostKey=/etc/ssh/ssh_host_ed25519_key -o PidFile=/run/sshd.pid \
  -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no \
  -o KbdInteractiveAuthentication=no -o UsePAM=no -E /var/log/sshd.log
for _ in $(seq 50); do [ -s "$HOST_ROOT/run/sshd.pid" ] && break; sleep 0.1; done
cp "$HOST_ROOT/run/sshd.pid" "$PID_DIR/sshd.pid"

# --- checks: every piece answers before we call the lab up -------------------
ssh_lab() {
  ssh -q -i "$LAB_DIR/ssh/id_ed25519" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=5 \
    -o UserKnownHostsFile="$LAB_DIR/ssh/known_hosts" -o StrictHostKeyChecking=yes "root@$EDGE_ADDR" "$@"
}
ok=no
for _ in $(seq 50); do
  if ssh_lab true 2>/dev/null; then ok=yes; break; fi
  sleep 0.1
done
[ "$ok" = yes ] || { ssh_lab true; log "sshd on $EDGE_ADDR does not answer" >&2; exit 1; }
for _ in $(seq 50); do
  ip netns exec "$NS_EDGE" curl -sf -o /dev/null --max-time 2 "http://$APT_ADDR:$APT_PORT/Packages.gz" && break
  sleep 0.1
done
ip netns exec "$NS_EDGE" curl -sf -o /dev/null --max-time 2 "http://$APT_ADDR:$APT_PORT/Packages.gz"
for addr in "$GATEWAY1" "$GATEWAY2"; do
  ip netns exec "$NS_EDGE" curl -sf -o /dev/null --max-time 2 "http://$addr:$NODE_PORT_STATUS/healthz/ready"
done
ssh_lab 'command -v haproxy' && { log "the fresh host unexpectedly has haproxy" >&2; exit 1; }

# --- the lab stack's configuration --------------------------------------------
cat >"$LAB_REPO/Pulumi.$LAB_NAME.yaml" <<YAML
# Generated by lab/up.sh for the local lab '$LAB_NAME' (make lab-down removes it).
# The SSH private key is added as a secret by lab/stack.sh once the toolchain is there.
config:
  source-ip-edge:haproxy:
    hosts:
      - name: lab-edge
        address: $EDGE_ADDR
        port: 22
        user: root
        hostKey: $HOST_KEY
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
    install: false
  source-ip-edge:proxyProtocol:
    mode: envoyfilter
    strict: true
  source-ip-edge:access:
    # The lab's visitors are allowed; one address no visitor has is denied. nginx does not
    # enforce these (no Envoy here): they are rendered, validated by istioctl and compiled by
    # istiod's generator (make gateway-test), like a real stack's.
    allow: [198.51.100.0/24, "2001:db8:100::/48"]
    deny: [198.51.100.66/32]
    trustedPeers: [$EDGE_ADDR/32, $EDGE_ADDR6/128]
  source-ip-edge:kubernetes:
    renderYamlToDirectory: $LAB_DIR/kubernetes
YAML

# --- what the tests and the proof read -----------------------------------------
cat >"$LAB_DIR/lab.json" <<JSON
{
  "name": "$LAB_NAME",
  "dir": "$LAB_DIR",
  "hostRoot": "$HOST_ROOT",
  "privateKeyFile": "$LAB_DIR/ssh/id_ed25519",
  "knownHostsFile": "$LAB_DIR/ssh/known_hosts",
  "edge": {"namespace": "$NS_EDGE", "address": "$EDGE_ADDR", "address6": "$EDGE_ADDR6"},
  "visitors": [
    {"name": "visitor-1", "namespace": "$NS_VISITOR1", "address": "$VISITOR1", "target": "$EDGE_ADDR"},
    {"name": "visitor-1", "namespace": "$NS_VISITOR1", "address": "$VISITOR1_6", "target": "$EDGE_ADDR6"},
    {"name": "visitor-2", "namespace": "$NS_VISITOR2", "address": "$VISITOR2", "target": "$EDGE_ADDR"}
  ],
  "gateways": [
    {"name": "gw1", "namespace": "$NS_GATEWAY1", "address": "$GATEWAY1"},
    {"name": "gw2", "namespace": "$NS_GATEWAY2", "address": "$GATEWAY2"}
  ],
  "namespaces": "$LAB_NAMESPACES"
}
JSON
touch "$LAB_DIR/fresh" "$LAB_DIR/up"
log "up in $(( $(date +%s) - started ))s: HAProxy host $EDGE_ADDR (ssh root@, key $LAB_DIR/ssh/id_ed25519), gateways $GATEWAY1 $GATEWAY2"
