"""Subcommands of the `knowcache` CLI, one module per area."""
