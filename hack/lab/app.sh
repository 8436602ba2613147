#!/usr/bin/env bash
# The application behind the lab's gateway: what a user installs next to the edge, which the edge
# stack does not create (README, "The application's routes"). An echo Deployment (its pods run
# hack/lab/echo.py, started by the node agents), its Services, and the routes that bind them to the
# stack's gateway: an Istio Gateway + VirtualService (HTTP on 80, TLS passed through on 443), a
# DestinationRule that makes Envoy send PROXY v2 to the TLS backend (so the backend sees the
# visitor's address through a passthrough), and a Telemetry turning on Envoy's access log (the
# "envoy" provider: text to the proxy's stdout) and Istio's metrics off (the stock Envoy has no
# istio.stats filter). Gateway API mode (gateway.api: gateway-api) is not
# covered yet.
#   hack/lab/app.sh apply    create or update them and wait for the echo pod to be ready
#   hack/lab/app.sh delete   remove them
source "$(dirname "$0")/common.sh"
export KUBECONFIG=$LAB_KUBECONFIG
APP_NS=lab-echo
GATEWAY_SELECTOR=${GATEWAY_SELECTOR:-istio: ingressgateway}

objects() {
  cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $APP_NS}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: $APP_NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
        - name: echo
          image: $ECHO_IMAGE
          ports: [{containerPort: 8080, name: http}, {containerPort: 8443, name: tls}]
          readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: $APP_NS}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-tls, namespace: $APP_NS}
spec:
  selector: {app: echo}
  ports: [{name: tls, port: 443, targetPort: 8443}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo-tls, namespace: $APP_NS}
spec:
  host: echo-tls.$APP_NS.svc.cluster.local
  trafficPolicy: {proxyProtocol: {version: V2}, tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: echo, namespace: $APP_NS}
spec:
  selector: {$GATEWAY_SELECTOR}
  servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: ["*"]
    - port: {number: 443, name: tls, protocol: TLS}
      tls: {mode: PASSTHROUGH}
      hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: $APP_NS}
spec:
  hosts: ["*"]
  gateways: [echo]
  http:
    - route: [{destination: {host: echo.$APP_NS.svc.cluster.local, port: {number: 80}}}]
  tls:
    - match: [{port: 443, sniHosts: ["*"]}]
      route: [{destination: {host: echo-tls.$APP_NS.svc.cluster.local, port: {number: 443}}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: lab-access-log, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
  # Istio's stats filter (istio.stats) is in Istio's proxy build only, not in the stock Envoy the lab
  # runs: all metrics off drops the filter (docs/stand-ins.md).
  metrics:
    - providers: [{name: prometheus}]
      overrides: [{match: {metric: ALL_METRICS, mode: CLIENT_AND_SERVER}, disabled: true}]
YAML
}

case "${1:-}" in
  apply)
    objects | kubectl apply -f - >/dev/null
    kubectl -n "$APP_NS" rollout status deployment/echo --timeout=120s >/dev/null
    log "app: echo backend ready behind Gateway $APP_NS/echo"
    ;;
  delete)
    objects | kubectl delete --ignore-not-found --wait=false -f - >/dev/null
    log "app: removed"
    ;;
  *) echo "usage: $0 apply|delete" >&2; exit 2 ;;
esac
