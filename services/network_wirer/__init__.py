"""network-wirer: per-app Docker networks, the router's routes (Caddy), access lines."""
