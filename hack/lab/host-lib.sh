#!/usr/bin/env bash
# The lab's HAProxy hosts (systemd-nspawn containers) as machines: boot, wait until booted, halt,
# power cut. Sourced after hack/lab/common.sh by hack/lab/up.sh, hack/lab/down.sh and hack/lab/host.sh.

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --register=no --keep-unit: the lab machine runs no systemd (no machined, no bus to ask for a scope);
# the container gets cgroups of its own instead (host_cgroups in hack/lab/common.sh).
# The container joins its edge namespace, so its sshd and HAProxy listen on the host's addresses.
# Its /proc, /sys, /dev and /run are mounted in the container's own mount namespace: the host's
# mount table gets nothing. SIGTERM to nspawn halts it cleanly (SIGRTMIN+3 to its systemd).
# Like a real host it manages its own network (CAP_NET_ADMIN, writable /proc/sys/net: keepalived's
# VIP, non-local binds); the namespace is its alone, so that reaches nothing else on the lab machine.
boot_host() {  # root, namespace, pid file, cgroups file, console log
  local root=$1 ns=$2 pidfile=$3 cgroups=$4 console=$5
  host_cgroups "source-ip-edge-$ns" >"$cgroups"
  (
    while read -r cgroup; do mkdir -p "$cgroup" && echo "$BASHPID" >"$cgroup/cgroup.procs"; done <"$cgroups"
    SYSTEMD_NSPAWN_API_VFS_WRITABLE=network exec systemd-nspawn --quiet --directory="$root" --boot \
      --register=no --keep-unit --machine="$ns" --network-namespace-path="/run/netns/$ns" \
      --capability=CAP_NET_ADMIN --console=pipe --resolv-conf=off --link-journal=no
  ) </dev/null >"$console" 2>&1 &
  echo $! >"$pidfile"
}

ssh_lab() {  # address, command...
  local addr=$1; shift
  ssh -q -i "$LAB_DIR/ssh/id_ed25519" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=5 \
    -o UserKnownHostsFile="$LAB_DIR/ssh/known_hosts" -o StrictHostKeyChecking=yes "root@$addr" "$@"
}

# Booted means ssh answers and systemd finished starting multi-user.target with no failed unit.
wait_booted() {  # address, pid file, console log, started (date +%s.%N)
  local addr=$1 pidfile=$2 console=$3 started=$4 ok=no state
  for _ in $(seq 300); do
    pid_alive "$pidfile" || { cat "$console" >&2; log "the HAProxy host $addr's container exited" >&2; exit 1; }
    if ssh_lab "$addr" true 2>/dev/null; then ok=yes; break; fi
    sleep 0.1
  done
  [ "$ok" = yes ] || { ssh_lab "$addr" true; log "ssh on $addr does not answer" >&2; exit 1; }
  state=$(ssh_lab "$addr" timeout 60 systemctl is-system-running --wait || true)
  if [ "$state" != running ]; then
    log "the HAProxy host $addr's systemd is '$state', not running; failed units:" >&2
    ssh_lab "$addr" systemctl --failed --no-legend >&2 || true
    exit 1
  fi
  log "HAProxy host $addr booted (systemd $state, ssh answering) in $(python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$started")s"
}

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

# Power cut: SIGKILL to everything in the host's own cgroups (nspawn and the whole container),
# until they are empty. Nothing in the container runs its shutdown.
kill_host() {  # cgroups file
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
  done <"$cgroups"
}

# The host's own cgroups (hack/lab/up.sh): anything still in them was the container's; then they go.
remove_host_cgroups() {  # cgroups file
  local cgroups=$1 cgroup
  [ -s "$cgroups" ] || return 0
  kill_host "$cgroups"
  while read -r cgroup; do
    [ -d "$cgroup" ] || continue
    find "$cgroup" -depth -type d -exec rmdir {} + || log "could not remove the cgroup $cgroup" >&2
  done <"$cgroups"
}

# The paths and names of one host, by its name in lab.json: sets HOST_ROOT_OF, HOST_NS_OF,
# HOST_PID_FILE_OF, HOST_CGROUPS_FILE_OF, HOST_CONSOLE_OF, HOST_ADDR_OF and HOST_PORT_OF (its
# cable's other end: the router's port, hack/lab/up.sh's attach).
# shellcheck disable=SC2034 # hack/lab/host.sh uses them
host_by_name() {  # lab-edge | lab-edge2
  case "$1" in
    lab-edge) HOST_ROOT_OF=$HOST_ROOT HOST_NS_OF=$NS_EDGE HOST_PID_FILE_OF=$HOST_PID_FILE
      HOST_CGROUPS_FILE_OF=$HOST_CGROUPS_FILE HOST_CONSOLE_OF=$LAB_DIR/host-console.log HOST_ADDR_OF=$EDGE_ADDR ;;
    lab-edge2) HOST_ROOT_OF=$HOST2_ROOT HOST_NS_OF=$NS_EDGE2 HOST_PID_FILE_OF=$HOST2_PID_FILE
      HOST_CGROUPS_FILE_OF=$HOST2_CGROUPS_FILE HOST_CONSOLE_OF=$LAB_DIR/host2-console.log HOST_ADDR_OF=$EDGE2_ADDR ;;
    *) log "no lab host named '$1' (lab-edge, lab-edge2)" >&2; return 1 ;;
  esac
  HOST_PORT_OF=to-${HOST_NS_OF#"$NS_PREFIX"-}
}
