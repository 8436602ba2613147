#!/usr/bin/env bash
# Removes the lab: every process in its namespaces (by pid, from `ip netns pids`)
# and its pid files, its mounts, namespaces, the root namespace's veth, its
# files and its generated stack configuration. Safe to run twice.
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

pids=$(lab_pids | sort -un | tr '\n' ' ')
if [ -n "${pids// }" ]; then
  log "stopping processes $pids"
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 50); do
    alive=""
    for p in $pids; do running "$p" && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  [ -n "$alive" ] && kill -KILL $alive 2>/dev/null || true
fi

for m in $(mounts_under "$HOST_ROOT"); do umount "$m" 2>/dev/null || umount -l "$m"; done
for ns in $LAB_NAMESPACES; do
  if ns_exists "$ns"; then ip netns del "$ns"; fi
done
ip link del "$ROOT_VETH" 2>/dev/null || true   # normally gone with its peer's namespace

if [ -n "$(mounts_under "$LAB_DIR")" ]; then
  log "still mounted under $LAB_DIR; not removing files" >&2
  exit 1
fi
rm -rf --one-file-system "$LAB_DIR"
rm -f "$LAB_REPO/Pulumi.$LAB_NAME.yaml" "$OWNER_FILE"
log "down"
