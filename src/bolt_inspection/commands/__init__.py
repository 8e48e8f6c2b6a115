"""Subcommands of ``bolt-inspection``; every non-private module here is one (see cli.py)."""
