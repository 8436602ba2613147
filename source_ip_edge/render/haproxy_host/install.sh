#!/bin/sh
# shellcheck shell=sh
# Install: record the host as it is, then install haproxy (and socat, the runtime API's client),
# and keepalived when WITH_KEEPALIVED is yes (a VIP), with the host's package manager. Nothing
# when they are there. Run after lib.sh and keepalived_lib.sh (scripts.py).
set -eu
take_host_lock
manage_haproxy
record_before
packages="haproxy socat"
if [ "${WITH_KEEPALIVED:-no}" = yes ]; then
  manage_keepalived
  record_before
  packages="$packages keepalived"
fi

missing=""
for p in $packages; do package_installed "$p" || missing="$missing $p"; done
if [ -z "$missing" ]; then
  log "$packages already installed: $(haproxy -v 2>/dev/null | head -n 1)"
else
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    dpkg-query -W -f '${binary:Package}\n' | sort >"$STATE_DIR/packages.before"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      # Exit 101 = "action forbidden" (invoke-rc.d(8)): the package's postinst does not start
      # the service; apply.sh starts it once the config is ours and checked.
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    log "apt-get update"
    apt-get update -q >/dev/null
    log "apt-get install$missing"
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -q --no-install-recommends $missing >/dev/null
    dpkg-query -W -f '${binary:Package}\n' | sort | comm -13 "$STATE_DIR/packages.before" - >>"$INSTALLED"
    rm -f "$STATE_DIR/packages.before"
  elif command -v dnf >/dev/null 2>&1; then
    rpm -qa --qf '%{NAME}\n' | sort >"$STATE_DIR/packages.before"
    log "dnf install$missing"
    # shellcheck disable=SC2086 # one word per package
    dnf install -y -q $missing >/dev/null
    rpm -qa --qf '%{NAME}\n' | sort | comm -13 "$STATE_DIR/packages.before" - >>"$INSTALLED"
    rm -f "$STATE_DIR/packages.before"
  else
    fail "no apt-get or dnf on this host; install $packages yourself"
  fi
  log "installed $(haproxy -v 2>/dev/null | head -n 1)"
fi

# RHEL family: SELinux lets haproxy_t connect only to http ports; NodePorts (30000-32767) need
# the haproxy_connect_any boolean (RHEL's "Configuring HAProxy" guide). uninstall.sh resets it.
if selinux_enforcing && [ "$(getsebool haproxy_connect_any | sed 's/.*--> //')" != on ]; then
  setsebool -P haproxy_connect_any 1
  log "set the SELinux boolean haproxy_connect_any (haproxy may connect to the gateway's NodePorts)"
fi
