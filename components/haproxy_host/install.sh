#!/bin/sh
# shellcheck shell=sh
# Install: record the host as it is, then install haproxy (and socat, the runtime API's client),
# and keepalived when WITH_KEEPALIVED is yes (a VIP), with the host's package manager. Nothing
# when they are there. keepalived's packages are listed apart: removing the VIP removes them
# (keepalived_restore.sh), while haproxy's stay. Run after lib.sh and keepalived_lib.sh (scripts.py).
set -eu
take_host_lock
manage_haproxy
record_before
if [ "${WITH_KEEPALIVED:-no}" = yes ]; then
  manage_keepalived
  record_before
fi

install_packages "haproxy socat" "$INSTALLED"
if [ "${WITH_KEEPALIVED:-no}" = yes ]; then install_packages keepalived "$KA_INSTALLED"; fi
log "$(haproxy -v 2>/dev/null | head -n 1)"

# RHEL family: SELinux lets haproxy_t connect only to http ports; NodePorts (30000-32767) need
# the haproxy_connect_any boolean (RHEL's "Configuring HAProxy" guide). uninstall.sh resets it.
if selinux_enforcing && [ "$(getsebool haproxy_connect_any | sed 's/.*--> //')" != on ]; then
  setsebool -P haproxy_connect_any 1
  log "set the SELinux boolean haproxy_connect_any (haproxy may connect to the gateway's NodePorts)"
fi
