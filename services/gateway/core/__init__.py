"""The gateway's state, database, settings and sealing, shared by every room."""
