"""Subcommands of ``scion-appliance``; each module: ``HELP``, ``add_arguments``, ``run``."""
