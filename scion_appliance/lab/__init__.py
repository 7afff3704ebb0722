"""The lab: a local multi-AS SCION network of this appliance's own routers on loopback."""

from scion_appliance.lab.lab import LAB_ROOT, Lab, running_lab

__all__ = ["LAB_ROOT", "Lab", "running_lab"]
