#!/usr/bin/env bash
# Starts the lab's gateway stand-ins: one nginx per gateway namespace, configured by
# hack/lab/gateway-standin-conf.sh (contract: docs/stand-ins.md), and checks that each behaves like
# Envoy before the lab is called up. Run by hack/lab/up.sh once the network is up; its processes are
# stopped by hack/lab/down.sh (pid files in PID_DIR, and every pid in the namespaces).
source "$(dirname "$0")/common.sh"

mkdir -p "$LAB_DIR/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=gateway.lab.invalid" -keyout "$LAB_DIR/tls/gateway.key" -out "$LAB_DIR/tls/gateway.crt" 2>/dev/null

for gw in gw1:"$NS_GATEWAY1":"$GATEWAY1" gw2:"$NS_GATEWAY2":"$GATEWAY2"; do
  IFS=: read -r name ns addr <<<"$gw"
  dir=$LAB_DIR/$name
  mkdir -p "$dir/tmp"
  STANDIN_NAME=$name STANDIN_ADDRESS=$addr STANDIN_DIR=$dir STANDIN_PID_FILE=$PID_DIR/$name-nginx.pid \
    HTTP_PORT="$NODE_PORT_HTTP $NODE_PORT_HTTP_2" HTTPS_PORT="$NODE_PORT_HTTPS $NODE_PORT_HTTPS_2" \
    STATUS_PORT="$NODE_PORT_STATUS $NODE_PORT_STATUS_2" \
    TLS_CERT=$LAB_DIR/tls/gateway.crt TLS_KEY=$LAB_DIR/tls/gateway.key \
    bash "$LAB_REPO/hack/lab/gateway-standin-conf.sh" >"$dir/nginx.conf"
  ip netns exec "$ns" nginx -q -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log"
done

# --- checks: each stand-in is as strict as the Envoy it stands for ----------------
# HTTP status code of a request from the HAProxy host's namespace; 000 when there was no reply.
status_of() { ip netns exec "$NS_EDGE" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true; }
expect() {  # what, wanted, got
  [ "$2" = "$3" ] || { log "gateway stand-in: $1 gave $3, not $2" >&2; exit 1; }
}
for addr in "$GATEWAY1" "$GATEWAY2"; do
  status=http://$addr:$NODE_PORT_STATUS/healthz/ready
  for _ in $(seq 50); do [ "$(status_of "$status")" = 200 ] && break; sleep 0.1; done
  expect "HTTP/1.1 $status" 200 "$(status_of "$status")"
  expect "HTTP/1.0 $status" 426 "$(status_of --http1.0 "$status")"
  expect "HTTP/1.1 without Host $status" 400 "$(status_of -H 'Host:' "$status")"
  expect "a request without a PROXY header to $addr:$NODE_PORT_HTTP" 000 "$(status_of "http://$addr:$NODE_PORT_HTTP/")"
  expect "a request with a PROXY header to $addr:$NODE_PORT_HTTP" 200 \
    "$(status_of --haproxy-protocol "http://$addr:$NODE_PORT_HTTP/")"
done
log "gateway stand-ins up and Envoy-like: $GATEWAY1 $GATEWAY2"
