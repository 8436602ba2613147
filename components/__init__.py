"""source-ip-edge: config.py (typed configuration), render/ (pure), resources/ (Pulumi), program.py, tools/."""
