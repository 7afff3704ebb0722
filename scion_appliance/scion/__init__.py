"""SCION protocol model, sans-IO: addresses, headers, paths, SCMP. Bytes and values in and out."""
