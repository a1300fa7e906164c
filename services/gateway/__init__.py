"""The gateway: Slipway's customer API (Heroku Platform API v3 shapes) over aiohttp.

    python -m slipway.services.gateway

See `app.py` for how the pieces fit and README.md ("Gateway") for the endpoints.
"""
