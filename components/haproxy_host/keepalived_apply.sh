#!/bin/sh
# shellcheck shell=sh
# Apply keepalived.conf (new_keepalived_config and new_check_script, defined by scripts.py) the way
# apply.sh applies haproxy.cfg (apply_managed_file, lib.sh): staged to a file of this run's own,
# checked with `keepalived -t`, swapped atomically, reloaded, and "applied" only once keepalived
# runs the new config (its vrrp_script reports the config's identity); rolled back otherwise.
# The VRRP password comes on stdin (a secret input of the command, never in its text); the
# interface is VIP_INTERFACE or the one holding an address in VIP_NETWORK.
# Run after lib.sh and keepalived_lib.sh; the create command of HAProxyHost's keepalived.
set -eu
take_host_lock
manage_keepalived
record_before

IFS= read -r vrrp_password || true
[ -n "$vrrp_password" ] || fail "no VRRP password on stdin (the secret source-ip-edge:vrrpPassword)"
# shellcheck disable=SC2034 # read by without_secret (lib.sh): kept out of the check's output
SECRET_TEXT=$vrrp_password
# Normally installed by install.sh; here too, so an apply after this resource's own restore (a
# replace: restore first, then apply) finds keepalived.
install_packages keepalived "$KA_INSTALLED"

if [ -n "$VIP_INTERFACE" ]; then
  ip link show dev "$VIP_INTERFACE" >/dev/null 2>&1 || fail "haproxy.vip.interface: this host has no interface $VIP_INTERFACE"
  interface=$VIP_INTERFACE
else
  interfaces=$(ip -o -4 addr show to "$VIP_NETWORK" | awk '{print $2}' | sort -u)
  case "$interfaces" in
    "") fail "no interface of this host has an address in $VIP_NETWORK (the VIP's subnet); set haproxy.vip.interface" ;;
    *"
"*) fail "several interfaces have an address in $VIP_NETWORK: $(echo "$interfaces" | tr '\n' ' '); set haproxy.vip.interface" ;;
  esac
  interface=$interfaces
fi

staging=$(staging_file)
check_staging=$(mktemp "$(dirname "$CHECK_SCRIPT")/.check.source-ip-edge.XXXXXX")
trap 'rm -f "$staging" "$check_staging"' EXIT
chmod 600 "$staging"   # it holds the VRRP password

# keepalived's own definitions ($NAME=value, keepalived.conf(5)) carry what is filled in here;
# the identity covers them and the rendered text, so a new password is a new config too.
definitions() {
  printf '%s (Pulumi): the next lines are filled in on this host; the rest is rendered.\n' "$MARKER"
  printf '$%s=%s\n' SOURCE_IP_EDGE_INTERFACE "$interface" SOURCE_IP_EDGE_VRRP_PASSWORD "$vrrp_password"
}
want=sha256=$({ definitions; new_keepalived_config; } | sha256sum | cut -c1-64)
{ definitions; printf '$%s=%s\n' SOURCE_IP_EDGE_IDENTITY "$want"; new_keepalived_config; } >"$staging"

new_check_script >"$check_staging"
chmod 755 "$check_staging"
if ! cmp -s "$check_staging" "$CHECK_SCRIPT" 2>/dev/null; then
  mv -f "$check_staging" "$CHECK_SCRIPT"
  log "installed the HAProxy check $CHECK_SCRIPT"
fi

log "the VIP's subnet $VIP_NETWORK is on $interface"
apply_managed_file "$staging" "$want"
