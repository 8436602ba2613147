#!/bin/sh
# keepalived's vrrp_script on each host (installed as /etc/keepalived/source-ip-edge-check-haproxy
# by keepalived_apply.sh): exits 0 while HAProxy answers on its runtime API, so the VIP leaves a
# host whose HAProxy is stopped, has no workers, or hangs. keepalived runs it every second as root.
# Arguments: the stats socket, the file for the config identity, the identity keepalived passes.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
socket=$1 loaded=$2 identity=$3

# Which keepalived.conf keepalived runs: the apply waits for the new identity after a reload.
if [ "$(cat "$loaded" 2>/dev/null)" != "$identity" ]; then
  printf '%s\n' "$identity" >"$loaded.tmp" && mv -f "$loaded.tmp" "$loaded"
fi

[ -S "$socket" ] || exit 1
# `show info` is answered by a worker: a live master alone does not pass.
echo "show info" | socat -t 1 stdio "UNIX-CONNECT:$socket" 2>/dev/null | grep -q '^Pid: '
