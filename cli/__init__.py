"""The `slipway` command: a Heroku-style CLI over the Slipway Platform API (v3 shapes).

Start-up is kept fast on purpose: only the standard library is imported until a
command needs more (`audit --verify` loads the chain verifier and its crypto).
"""
