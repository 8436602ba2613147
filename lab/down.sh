#!/usr/bin/env bash
# Removes the lab: the HAProxy hosts' containers (halted through systemd-nspawn's pid) and their cgroups,
# every other process in its namespaces (by pid, from `ip netns pids`) and its pid files,
# any mount under its run directory, its namespaces, the root namespace's veth, its run
# directory, build/<LAB_NAME> and its generated stack configuration. Safe to run twice.
# `make lab-down` runs `pulumi destroy` before this.
source "$(dirname "$0")/common.sh"

refuse_foreign_lab

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

lab_pids() {
  for ns in $LAB_NAMESPACES; do ns_exists "$ns" && ip netns pids "$ns"; done
  for f in "$PID_DIR"/*.pid; do [ -s "$f" ] && cat "$f"; done
  true
} 2>/dev/null

# kill -0 succeeds on a zombie too; a zombie is already done.
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# Halts the HAProxy host: SIGTERM makes nspawn send SIGRTMIN+3 to the container's systemd (a clean
# poweroff); a second SIGTERM makes nspawn kill the container; SIGKILL to the container's init and
# to nspawn last. Only the pid from our pid file, and only if it is the nspawn of this lab's root.
stop_host() {  # pid file, root
  local pidfile=$1 root=$2 pid inits started
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [ -n "$pid" ] && running "$pid" || return 0
  if ! tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "--directory=$root"; then
    log "pid $pid in $pidfile is not this lab's systemd-nspawn; not signalling it" >&2
    return 0
  fi
  log "halting the HAProxy host (systemd-nspawn pid $pid)"
  started=$(date +%s%N)
  kill -TERM "$pid" 2>/dev/null || true
  if wait_gone "$pid" 300; then
    log "HAProxy host halted in $(( ($(date +%s%N) - started) / 1000000 )) ms"
    return 0
  fi
  log "the HAProxy host did not halt in 30s; terminating it" >&2
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 50 && return 0
  mapfile -t inits < <(tr -s ' ' '\n' <"/proc/$pid/task/$pid/children" 2>/dev/null)
  [ "${#inits[@]}" -eq 0 ] || kill -KILL "${inits[@]}" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 50
}

wait_gone() {  # pid, tenths of a second
  for _ in $(seq "$2"); do running "$1" || return 0; sleep 0.1; done
  ! running "$1"
}

# The host's own cgroups (lab/up.sh): anything still in them was the container's; then they go.
remove_host_cgroups() {  # cgroups file
  local cgroups=$1 cgroup pids
  [ -s "$cgroups" ] || return 0
  while read -r cgroup; do
    [ -d "$cgroup" ] || continue
    for _ in $(seq 50); do
      mapfile -t pids < <(find "$cgroup" -name cgroup.procs -exec cat {} +)
      [ "${#pids[@]}" -gt 0 ] || break
      log "killing what is left in $cgroup: ${pids[*]}"
      kill -KILL "${pids[@]}" 2>/dev/null || true
      sleep 0.1
    done
    find "$cgroup" -depth -type d -exec rmdir {} + || log "could not remove the cgroup $cgroup" >&2
  done <"$cgroups"
}

bash "$LAB_REPO/lab/control-plane.sh" down || log "the control plane did not come down cleanly" >&2
stop_host "$HOST_PID_FILE" "$HOST_ROOT" &
stop_host "$HOST2_PID_FILE" "$HOST2_ROOT" &
wait
remove_host_cgroups "$HOST_CGROUPS_FILE"
remove_host_cgroups "$HOST2_CGROUPS_FILE"
mapfile -t pids < <(lab_pids | grep -E '^[0-9]+$' | sort -un)
if [ "${#pids[@]}" -gt 0 ]; then
  log "stopping processes ${pids[*]}"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    alive=()
    for p in "${pids[@]}"; do running "$p" && alive+=("$p"); done
    [ "${#alive[@]}" -eq 0 ] && break
    sleep 0.1
  done
  [ "${#alive[@]}" -eq 0 ] || kill -KILL "${alive[@]}" 2>/dev/null || true
fi

for m in $(mounts_under "$LAB_DIR"); do umount "$m" 2>/dev/null || umount -l "$m"; done
for ns in $LAB_NAMESPACES; do
  if ns_exists "$ns"; then ip netns del "$ns"; fi
done
ip link del "$ROOT_VETH" 2>/dev/null || true   # normally gone with its peer's namespace

if [ -n "$(mounts_under "$LAB_DIR")" ]; then
  log "still mounted under $LAB_DIR; not removing files" >&2
  exit 1
fi
rm -rf --one-file-system "$LAB_DIR" "$LAB_OUT"
# nspawn's per-machine directory on the host, left behind only when it was killed.
rmdir "/run/systemd/nspawn/propagate/$NS_EDGE" "/run/systemd/nspawn/propagate/$NS_EDGE2" 2>/dev/null || true
rm -f "$LAB_REPO/Pulumi.$LAB_NAME.yaml" "$OWNER_FILE"
log "down"
