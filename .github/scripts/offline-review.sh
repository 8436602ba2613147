#!/usr/bin/env bash
# Writes the offline review of one stack as Markdown on stdout: the gateway listeners istiod's
# generator computed (the output of `make gateway-preview`) and each host's haproxy.cfg, every
# part in a collapsed <details> section. The preview workflow posts it on the pull request.
#
#   offline-review.sh STACK RENDER_DIR GATEWAY_PREVIEW_OUTPUT [ARTIFACT_NAME]
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 STACK RENDER_DIR GATEWAY_PREVIEW_OUTPUT [ARTIFACT_NAME]" >&2
  exit 2
fi
stack=$1 render_dir=$2 gateway_output=$3 artifact=${4:-}
# A pull-request comment holds at most 65536 characters; the artifact has everything.
max_lines=${OFFLINE_REVIEW_MAX_LINES:-300}

[ -d "$render_dir" ] || { echo "$0: no render at $render_dir" >&2; exit 1; }
[ -f "$gateway_output" ] || { echo "$0: no gateway-preview output at $gateway_output" >&2; exit 1; }

# details SUMMARY LANGUAGE FILE: one collapsed section with the file in a code block.
details() {
  local lines
  lines=$(wc -l <"$3")
  printf '<details>\n<summary>%s</summary>\n\n```%s\n' "$1" "$2"
  # Paths relative to the checkout: the runner's directory means nothing to a reviewer.
  head -n "$max_lines" "$3" | sed "s|$PWD/||g"
  printf '```\n'
  if [ "$lines" -gt "$max_lines" ]; then
    printf '\n%s of %s lines shown; the artifact has the whole file.\n' "$max_lines" "$lines"
  fi
  printf '\n</details>\n\n'
}

printf '### Offline render: <code>%s</code>\n\n' "$stack"
printf 'Computed without a cluster, credentials or network (secrets are placeholders): what the\n'
printf 'HAProxy hosts and the gateway will run if this merges.\n\n'
details "Gateway listeners (<code>make gateway-preview STACK=$stack</code>)" text "$gateway_output"
# One section per distinct haproxy.cfg, naming every host that runs it.
declare -A hosts_of=()
configs=()
for cfg in "$render_dir"/haproxy/*/haproxy.cfg; do
  [ -f "$cfg" ] || continue
  sum=$(sha256sum <"$cfg" | cut -d' ' -f1)
  host="<code>$(basename "$(dirname "$cfg")")</code>"
  if [ -z "${hosts_of[$sum]:-}" ]; then
    configs+=("$cfg")
    hosts_of[$sum]=$host
  else
    hosts_of[$sum]+=", $host"
  fi
done
[ ${#configs[@]} -gt 0 ] || printf 'No haproxy.cfg in the render.\n\n'
for cfg in "${configs[@]}"; do
  sum=$(sha256sum <"$cfg" | cut -d' ' -f1)
  details "haproxy.cfg on ${hosts_of[$sum]}" haproxy "$cfg"
done
objects=$(find "$render_dir/kubernetes" -name '*.yaml' 2>/dev/null | wc -l)
printf '%s Kubernetes manifests rendered.' "$objects"
if [ -n "$artifact" ]; then
  run_url="${GITHUB_SERVER_URL:-https://github.com}/${GITHUB_REPOSITORY:-OWNER/REPO}/actions/runs/${GITHUB_RUN_ID:-0}"
  printf ' Everything (render and full listeners) is the artifact <code>%s</code> of [this run](%s).' "$artifact" "$run_url"
fi
printf '\n'
