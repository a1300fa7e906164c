"""Libraries shared by Slipway's services: bus, service runner, storage, crypto, logging."""
