"""Log sessions, drains and metrics, read from every host's log-shipper."""
