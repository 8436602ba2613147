"""Offline tools run from the command line (python -m source_ip_edge.tools.NAME)."""
