"""Pure renderers: configuration in, text and manifests out; no pulumi import (tests/unit/test_layout.py)."""
