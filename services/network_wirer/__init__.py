"""network-wirer: per-app Docker networks, the router's routes (HAProxy), access lines."""
