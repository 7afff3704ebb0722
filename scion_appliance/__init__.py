"""scion-appliance: a SCION edge appliance (border router, IP gateway over SCION, lab)."""

__version__ = "0.1.0"
