"""The service runner, its settings and logging: what every Slipway service stands on."""

from slipway.libs.service.runner import Key, ServiceApp, run_service
from slipway.libs.service.settings import Settings, SettingsError, load_settings

__all__ = ["Key", "ServiceApp", "Settings", "SettingsError", "load_settings", "run_service"]
