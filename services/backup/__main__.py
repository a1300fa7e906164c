"""`python -m slipway.services.backup`: one host's backup service (see settings.py)."""

from slipway.libs.service import load_settings, run_service
from slipway.services.backup.app import create_service
from slipway.services.backup.settings import BackupSettings


def main() -> None:
    run_service(create_service(load_settings(BackupSettings)))


if __name__ == "__main__":
    main()
