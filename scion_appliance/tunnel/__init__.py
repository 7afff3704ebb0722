"""Tunnel security between appliances: Noise IK handshake, sessions, rekey timers, cookies, allowlist.

Everything here is sans-IO: bytes and values in, bytes and values out, time passed in as a number.
"""
