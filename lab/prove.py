"""Proves the lab's edge: each visitor's address arrives at the gateway stand-in, over HTTP and HTTPS.

Prints one row per visitor address and exits non-zero if any does not match.
Usage: python -m lab.prove [LAB_NAME]
"""

from __future__ import annotations

import sys

from lab.labkit import Lab


def main(name: str) -> int:
    lab = Lab.load(name)
    rows = []
    for visitor in lab.visitors:
        http = lab.seen_by_gateway(visitor, "http")
        https = lab.seen_by_gateway(visitor, "https")
        rows.append((visitor.name, visitor.address, http, https,
                     "yes" if http == visitor.address == https else "NO"))
    header = ("visitor", "address", "gateway saw (HTTP)", "gateway saw (HTTPS)", "match")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    mismatches = sum(row[-1] != "yes" for row in rows)
    if mismatches:
        print(f"{mismatches} of {len(rows)} visitor addresses did not arrive at the gateway", file=sys.stderr)
        return 1
    print(f"all {len(rows)} visitor addresses arrived at the gateway through HAProxy (PROXY v2)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "lab"))
