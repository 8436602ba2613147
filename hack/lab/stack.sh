#!/usr/bin/env bash
# The lab stack's Pulumi steps, with the toolchain's `pulumi` on PATH and its
# environment (PULUMI_BACKEND_URL=file://..., PULUMI_CONFIG_PASSPHRASE, ...), and KUBECONFIG
# set to the lab's control plane (the kubernetes provider reads it; the stack names its context).
#   hack/lab/stack.sh prepare   create the stack, set the SSH key and VRRP password secrets (new lab: forget the old hosts)
#   hack/lab/stack.sh up        prepare, then `pulumi up --yes`
#   hack/lab/stack.sh destroy   `pulumi destroy --yes`, then remove the stack
source "$(dirname "$0")/common.sh"
cd "$LAB_REPO"
STACK=$LAB_NAME
export KUBECONFIG=$LAB_KUBECONFIG

stack_exists() { pulumi stack ls --json 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if any(s["name"].split("/")[-1] == sys.argv[1] for s in json.load(sys.stdin)) else 1)' "$STACK"; }

prepare() {
  [ -f "$LAB_DIR/up" ] || { log "the lab is not up (make lab-setup)" >&2; exit 1; }
  if [ -f "$LAB_DIR/fresh" ] || ! stack_exists; then
    if stack_exists; then
      # The lab host is new: what the old stack recorded about the old one is void.
      log "new lab host: forgetting the old '$STACK' stack's state"
      pulumi stack rm --yes --force --preserve-config --stack "$STACK" >/dev/null
    fi
    # A salt or secret left from another passphrase would not decrypt: start the secrets afresh.
    sed -i -e '/^encryptionsalt:/d' -e '/^  source-ip-edge:sshPrivateKey:$/{N;d}' -e '/^  source-ip-edge:vrrpPassword:$/{N;d}' "Pulumi.$STACK.yaml"
    pulumi stack init "$STACK" >/dev/null
    # From stdin, so the key is in no command line; stored encrypted in Pulumi.$STACK.yaml.
    pulumi config set --secret --stack "$STACK" source-ip-edge:sshPrivateKey <"$LAB_DIR/ssh/id_ed25519"
    pulumi config set --secret --stack "$STACK" source-ip-edge:vrrpPassword <"$LAB_DIR/vrrp-password"
    rm -f "$LAB_DIR/fresh"
    log "stack '$STACK' ready"
  fi
}

case "${1:-}" in
  prepare) prepare ;;
  up)
    prepare
    started=$(date +%s.%N)
    pulumi up --yes --stack "$STACK" --color never --suppress-progress
    log "pulumi up took $(python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$started")s"
    ;;
  destroy)
    if ! stack_exists; then log "no '$STACK' stack"; exit 0; fi
    pulumi destroy --yes --stack "$STACK" --color never --suppress-progress
    pulumi stack rm --yes --stack "$STACK" >/dev/null
    log "stack '$STACK' destroyed and removed"
    ;;
  *) echo "usage: $0 prepare|up|destroy" >&2; exit 2 ;;
esac
