"""source-ip-edge: HAProxy (TCP, PROXY v2) in front of an Istio ingress gateway, so that
AuthorizationPolicy sees the visitor's real IP. Reads config, builds the edge, exports."""

import pulumi

from components.program import build

for name, value in build().outputs.items():
    pulumi.export(name, value)
