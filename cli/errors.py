"""Errors the CLI reports to its user as one line on stderr.

    CliError                 exit 1: something went wrong; the message says what to do
    ├── UsageError           exit 2: the command line itself is wrong
    ├── NotLoggedIn          no token stored and none in SLIPWAY_API_KEY
    ├── ApiError             the API answered with an error body {"id", "message"}
    └── Unreachable          no answer from the API at all (refused, DNS, timeout)

Anything else escaping a command is a bug and is reported as such by `main`.
"""

from __future__ import annotations


class CliError(Exception):
    """Root of the CLI's expected failures: a message for the user and an exit status."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    """The arguments do not fit the command; the user must change the command line."""

    exit_code = 2


class NotLoggedIn(CliError):
    """There is no token to send."""

    def __init__(self) -> None:
        super().__init__("Not logged in. Run `slipway login` or set SLIPWAY_API_KEY.")


class ApiError(CliError):
    """The API refused the request; `error_id` is the Heroku-style machine-readable id."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id


class Unreachable(CliError):
    """The API could not be reached at all."""
