"""The wire contracts: every message Slipway's services exchange, and every subject name.

Services share nothing but this package. Messages are frozen, keyword-only
`msgspec.Struct`s with a versioned tag; see `base.py` for the evolution rules.
"""
