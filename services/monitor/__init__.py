"""The monitor service: the platform's status, alert rules, alerts (see contracts/monitor.py)."""
