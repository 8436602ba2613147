#!/bin/sh
# shellcheck shell=sh
# Access list apply: the new list file arrives on stdin. Checked (its sha256, then haproxy itself
# loads it as an `src` pattern file), swapped in atomically (the previous kept), then, when the
# running HAProxy has the list loaded, put into it through the runtime API without a reload: a new
# version of the list is prepared, filled and committed at once (`prepare acl`, `add acl @VER`,
# `commit acl @VER`), so a connection is matched against the old list or the new, never a part.
# "Applied" means the running HAProxy reports exactly the file's networks (`show acl`); otherwise
# the previous file goes back and the script fails. When HAProxy does not run the list yet (the
# first apply, or haproxy.cfg is about to name it), the file is only put in place: the config's
# apply, which runs after this, loads it.
# Parameters: LIST_NAME (allow or deny), LIST_FILE, LIST_SHA256, LIST_ENTRIES.
# Run after lib.sh; the create command of HAProxyHost's allow-list and deny-list.
set -eu
LC_ALL=C  # sort and comm in one byte order
export LC_ALL
take_host_lock
mkdir -p "$(dirname "$LIST_FILE")"
staging=$(mktemp "$(dirname "$LIST_FILE")/.$(basename "$LIST_FILE").source-ip-edge.XXXXXX")
trap 'rm -f "$staging" "$staging.cfg" "$staging.out" "$staging.want" "$staging.got"' EXIT
cat >"$staging"
chmod 644 "$staging"
got=$(sha256sum "$staging" | cut -d' ' -f1)
[ "$got" = "$LIST_SHA256" ] || fail "the $LIST_NAME list arrived incomplete (sha256 $got, want $LIST_SHA256); nothing changed"

# haproxy's own parser: a line it would refuse fails here, before the live file is touched.
printf 'defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n%s\n%s\n%s\n%s\n' \
  'listen source-ip-edge-list-check' '    bind 127.0.0.1:1' \
  "    tcp-request connection reject if { src -f $staging }" '    server none 127.0.0.1:1' >"$staging.cfg"
if ! haproxy -c -f "$staging.cfg" >"$staging.out" 2>&1; then
  cat "$staging.out" >&2
  fail "haproxy rejected the new $LIST_NAME list; live list untouched"
fi
networks() { grep -v -e '^#' -e '^[[:space:]]*$' "$1"; }
[ "$(networks "$staging" | wc -l)" -eq "$LIST_ENTRIES" ] || fail "the $LIST_NAME list does not hold $LIST_ENTRIES networks"

# The running HAProxy has the list loaded when `show acl` names the file.
list_loaded() {
  [ -S "$STATS_SOCKET" ] || return 1
  echo "show acl" | socat -t 2 stdio "UNIX-CONNECT:$STATS_SOCKET" 2>/dev/null | grep -qF "($LIST_FILE)"
}
# Whether the running HAProxy's current version of the list is exactly the networks of file $1.
runtime_matches() {
  networks "$1" | sort >"$staging.want"
  echo "show acl $LIST_FILE" | socat -t 10 stdio "UNIX-CONNECT:$STATS_SOCKET" 2>/dev/null |
    awk 'NF == 2 { print $2 }' | sort >"$staging.got"
  cmp -s "$staging.want" "$staging.got"
}

if [ -e "$LIST_FILE" ] && cmp -s "$staging" "$LIST_FILE"; then
  if ! list_loaded; then log "$LIST_NAME list unchanged ($LIST_ENTRIES networks)"; exit 0; fi
  if runtime_matches "$LIST_FILE"; then log "$LIST_NAME list unchanged and enforced by the running haproxy"; exit 0; fi
  log "$LIST_NAME list is in place but the running haproxy holds another: loading it now"
fi

previous=$LIST_FILE.source-ip-edge.prev
if [ -e "$LIST_FILE" ]; then
  cp -p "$LIST_FILE" "$previous"
  networks "$previous" | sort >"$staging.got"
  networks "$staging" | sort >"$staging.want"
  added=$(comm -13 "$staging.got" "$staging.want" | wc -l | tr -d ' ')
  removed=$(comm -23 "$staging.got" "$staging.want" | wc -l | tr -d ' ')
  log "$LIST_NAME list: $added added (first: $(comm -13 "$staging.got" "$staging.want" | head -n 1))," \
    "$removed removed (first: $(comm -23 "$staging.got" "$staging.want" | head -n 1)), $LIST_ENTRIES in all"
fi
cp -p "$staging" "$staging.cfg"   # the staging copy stays for the runtime update below
mv -f "$staging.cfg" "$LIST_FILE"
log "swapped in the new $LIST_NAME list ($LIST_FILE)"

if ! list_loaded; then
  log "haproxy does not run the $LIST_NAME list yet: it loads $LIST_FILE with haproxy.cfg"
  exit 0
fi
rollback() {
  if [ -e "$previous" ]; then cp -p "$previous" "$staging.cfg" && mv -f "$staging.cfg" "$LIST_FILE"; fi
  fail "$1; the previous $LIST_NAME list is back in place and still enforced"
}
version=$(echo "prepare acl $LIST_FILE" | socat -t 10 stdio "UNIX-CONNECT:$STATS_SOCKET" 2>/dev/null |
  sed -n 's/^New version created: *\([0-9][0-9]*\).*/\1/p')
[ -n "$version" ] || rollback "haproxy's runtime API did not prepare a new version of the $LIST_NAME list"
# One socket connection: `prompt` keeps it open for every line; each line answers with an empty line and the
# prompt unless it fails. The new version is invisible to connections until its commit.
{ echo prompt
  networks "$staging" | sed "s|^|add acl @$version $LIST_FILE |"
  echo "commit acl @$version $LIST_FILE"
  echo quit
} | socat -t 60 stdio "UNIX-CONNECT:$STATS_SOCKET" >"$staging.out" 2>&1 || true
if grep -v -e '^> *$' -e '^$' "$staging.out" >"$staging.got"; then
  head -n 5 "$staging.got" >&2
  echo "clear acl @$version $LIST_FILE" | socat -t 10 stdio "UNIX-CONNECT:$STATS_SOCKET" >/dev/null 2>&1 || true
  rollback "haproxy's runtime API refused the new $LIST_NAME list"
fi
runtime_matches "$LIST_FILE" || rollback "the running haproxy does not report the new $LIST_NAME list after its commit"
log "the running haproxy enforces the new $LIST_NAME list ($LIST_ENTRIES networks, version $version), no reload"
