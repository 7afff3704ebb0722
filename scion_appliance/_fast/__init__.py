"""Native hot path (Cython over C and libsodium). Each module has a ``.pyi`` stub beside it."""
