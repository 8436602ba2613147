#!/usr/bin/env bash
# One HAProxy host of a running lab, as a machine (the failover tests stop a whole host):
#   hack/lab/host.sh halt NAME   a clean poweroff: SIGTERM to its systemd-nspawn, systemd shuts down
#   hack/lab/host.sh cut NAME    a power cut: its link goes dark and everything in its cgroups gets
#                           SIGKILL at once; no shutdown runs
#   hack/lab/host.sh boot NAME   power on: its link comes back and it boots from its root (its disk),
#                           until systemd is running
# NAME is the host's name in lab.json (lab-edge, lab-edge2). The host's network namespace is the
# lab's and outlives the container, so a stopped host's link is taken down at the router's port (a
# dark NIC: no frame in or out, while the namespace keeps its addresses and routes), and the
# addresses the host added at run time (the VIP keepalived holds) go, as a machine's do when it
# loses power; the address the lab gave it stays for the next boot.
source "$(dirname "$0")/common.sh"
source "$LAB_REPO/hack/lab/host-lib.sh"

[ -f "$LAB_DIR/up" ] || { log "the lab is not up" >&2; exit 1; }
[ "$#" -eq 2 ] || { echo "usage: $0 halt|cut|boot NAME" >&2; exit 2; }
host_by_name "$2" || exit 2

forget_runtime_addresses() {
  ip -n "$HOST_NS_OF" -4 addr del "$VIP_ADDR/24" dev eth0 2>/dev/null || true
}

link() {  # up | down
  ip -n "$NS_ROUTER" link set "$HOST_PORT_OF" "$1"
}

case "$1" in
  halt)
    stop_host "$HOST_PID_FILE_OF" "$HOST_ROOT_OF"
    link down
    remove_host_cgroups "$HOST_CGROUPS_FILE_OF"   # boot makes them afresh, as hack/lab/up.sh does
    forget_runtime_addresses
    log "$2 halted" ;;
  cut)
    pid_alive "$HOST_PID_FILE_OF" || { log "$2 is not running" >&2; exit 1; }
    link down
    remove_host_cgroups "$HOST_CGROUPS_FILE_OF"   # SIGKILL to all in them first (kill_host)
    forget_runtime_addresses
    log "$2 lost its power" ;;
  boot)
    pid_alive "$HOST_PID_FILE_OF" && { log "$2 is running already" >&2; exit 1; }
    started=$(date +%s.%N)
    link up
    boot_host "$HOST_ROOT_OF" "$HOST_NS_OF" "$HOST_PID_FILE_OF" "$HOST_CGROUPS_FILE_OF" "$HOST_CONSOLE_OF"
    wait_booted "$HOST_ADDR_OF" "$HOST_PID_FILE_OF" "$HOST_CONSOLE_OF" "$started" ;;
  *) echo "usage: $0 halt|cut|boot NAME" >&2; exit 2 ;;
esac
