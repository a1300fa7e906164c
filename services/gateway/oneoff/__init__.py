"""One-off dynos: the attach secret and its two doors (websocket, rendezvous)."""
