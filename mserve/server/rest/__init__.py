"""The REST transport: the ASGI edge, its routes and the fast path under it."""
