"""Offline tools run from the command line (python -m hack.tools.NAME)."""
