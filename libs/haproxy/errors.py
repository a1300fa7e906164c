"""The errors of libs/haproxy: one root, HAProxyError.

HAProxyError                the router cannot be run or driven as asked
├── UnsafeSocketFolder      a socket's folder cannot be made private
├── RuntimeCommandError     HAProxy refused a runtime command (its answer attached)
└── RuntimeUnavailable      nothing answers on the runtime socket
"""

from __future__ import annotations


class HAProxyError(Exception):
    """Root of this module's errors: the router cannot be run or driven as asked."""


class UnsafeSocketFolder(HAProxyError):
    """A socket's folder cannot be made private; the message says what to fix."""


class RuntimeCommandError(HAProxyError):
    """HAProxy refused a runtime command; `answer` is what it said."""

    def __init__(self, command: str, answer: str) -> None:
        super().__init__(f"haproxy refused {command.splitlines()[0]!r}: {answer.strip()[:300]}")
        self.command = command
        self.answer = answer


class RuntimeUnavailable(HAProxyError):
    """Nothing answers on the runtime socket (HAProxy stopped, or is reloading)."""
