"""Thin subcommand modules: argument parsing and a call into the library (see ``cli.py``)."""
