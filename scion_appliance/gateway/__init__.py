"""The IP/datagram gateway: sessions with peer appliances over SCION, probing, failover."""

from scion_appliance.gateway.service import Gateway, GatewayError, PeerSpec

__all__ = ["Gateway", "GatewayError", "PeerSpec"]
