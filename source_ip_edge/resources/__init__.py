"""Pulumi ComponentResources: each turns one renderer's output (same file name under render/) into resources."""
