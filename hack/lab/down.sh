#!/usr/bin/env bash
# Removes the lab: the HAProxy hosts' containers (halted through systemd-nspawn's pid) and their cgroups,
# every other process in its namespaces (by pid, from `ip netns pids`) and its pid files,
# any mount under its run directory, its namespaces, the root namespace's veth, its run
# directory, build/<LAB_NAME> and its generated stack configuration. Safe to run twice.
# `make lab-down` runs `pulumi destroy` before this.
# With ABANDONED_LAB_DIR set to another checkout's run directory (refuse_foreign_lab in common.sh,
# when none of that lab's processes runs) it removes that lab's remains instead, and none of this
# checkout's files.
source "$(dirname "$0")/common.sh"
source "$LAB_REPO/hack/lab/host-lib.sh"

[ -n "${ABANDONED_LAB_DIR:-}" ] || refuse_foreign_lab

lab_pids() {
  for ns in $LAB_NAMESPACES; do ns_exists "$ns" && ip netns pids "$ns"; done
  for f in "$PID_DIR"/*.pid; do [ -s "$f" ] && cat "$f"; done
  true
} 2>/dev/null

# The node agents first: on SIGTERM each stops its pods' processes (SIGTERM, their grace period, at most
# 30 s) and removes their namespaces. Whatever is left in a pod namespace is stopped by pid after.
agents=()
for f in "$PID_DIR"/node-agent-*.pid; do [ -s "$f" ] && running "$(cat "$f")" && agents+=("$(cat "$f")"); done
[ "${#agents[@]}" -eq 0 ] || stop_pids 450 "${agents[@]}"
pod_namespaces() { ip netns list | awk '{print $1}' | grep "^$POD_NS_PREFIX" || true; }
mapfile -t pids < <(for ns in $(pod_namespaces); do ip netns pids "$ns"; done | sort -un)
stop_pids 100 "${pids[@]}"
for ns in $(pod_namespaces); do ip netns del "$ns"; done

bash "$LAB_REPO/hack/lab/control-plane.sh" down || log "the control plane did not come down cleanly" >&2
stop_host "$HOST_PID_FILE" "$HOST_ROOT" &
stop_host "$HOST2_PID_FILE" "$HOST2_ROOT" &
wait
remove_host_cgroups "$HOST_CGROUPS_FILE"
remove_host_cgroups "$HOST2_CGROUPS_FILE"
mapfile -t pids < <(lab_pids | grep -E '^[0-9]+$' | sort -un)
stop_pids 50 "${pids[@]}"

for m in $(mounts_under "$LAB_DIR"); do umount "$m" 2>/dev/null || umount -l "$m"; done
for ns in $LAB_NAMESPACES; do
  if ns_exists "$ns"; then ip netns del "$ns"; fi
done
ip link del "$ROOT_VETH" 2>/dev/null || true   # normally gone with its peer's namespace

if [ -n "$(mounts_under "$LAB_DIR")" ]; then
  log "still mounted under $LAB_DIR; not removing files" >&2
  exit 1
fi
rm -rf --one-file-system "$LAB_DIR"
# nspawn's per-machine directory on the host, left behind only when it was killed.
rmdir "/run/systemd/nspawn/propagate/$NS_EDGE" "/run/systemd/nspawn/propagate/$NS_EDGE2" 2>/dev/null || true
rm -f "$OWNER_FILE"
# This checkout's files, unless the lab removed was another checkout's.
[ -n "${ABANDONED_LAB_DIR:-}" ] || rm -rf "$LAB_OUT" "$LAB_REPO/Pulumi.$LAB_NAME.yaml"
log "down"
