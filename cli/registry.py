"""How commands are declared and what they receive when they run.

A command module declares each command once with `@command(...)`; `main` builds
the argparse parser and the help pages from those declarations. A command gets a
`Context` (credentials, API client, chosen app, output streams) and its parsed
arguments, and reports failure by raising `CliError`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from slipway.cli import appselect, config, output
from slipway.cli.client import Client
from slipway.cli.errors import NotLoggedIn


@dataclass(frozen=True)
class Arg:
    """One argparse argument: the flags or name and `add_argument`'s keyword arguments."""

    flags: tuple[str, ...]
    options: Mapping[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """Declare an argument exactly as `ArgumentParser.add_argument` would take it."""
    return Arg(flags=flags, options=options)


@dataclass
class Context:
    """What a running command may use; tests build one with their own env and cwd."""

    env: Mapping[str, str]
    cwd: Path
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _client: Client | None = None
    _credentials: config.Credentials | None = None

    def credentials(self) -> config.Credentials:
        """The stored credentials with the environment's overrides (read once)."""
        if self._credentials is None:
            self._credentials = config.effective(self.env)
        return self._credentials

    def client(self) -> Client:
        """An API client carrying the user's token; not logged in is an error."""
        if self._client is None:
            credentials = self.credentials()
            if not credentials.token:
                raise NotLoggedIn()
            self._client = Client(credentials.api_url, credentials.token)
        return self._client

    def app(self, args: argparse.Namespace) -> str:
        """The app this invocation acts on (flag, env, or git remote)."""
        return appselect.resolve(
            app=getattr(args, "app", None),
            remote=getattr(args, "remote", None),
            env=self.env,
            cwd=self.cwd,
            api_url=self.credentials().api_url,
        )

    def out(self, text: str = "") -> None:
        """Print data to stdout (what scripts consume)."""
        print(text, file=self.stdout)

    def note(self, text: str) -> None:
        """Print progress or hints to stderr, keeping stdout clean for pipes."""
        print(text, file=self.stderr)

    @property
    def interactive(self) -> bool:
        """Whether a person is typing at stdin (prompts make sense)."""
        return self.stdin.isatty()

    def ask(self, prompt: str) -> str:
        """Prompt on stderr and read one line from stdin; end of input reads as ''."""
        self.stderr.write(prompt)
        self.stderr.flush()
        return self.stdin.readline().rstrip("\r\n")

    def emit_json(self, data: Any) -> None:
        """Print the API's answer as JSON (`--json`)."""
        self.out(output.to_json(data))


Runner = Callable[[Context, argparse.Namespace], None]


@dataclass(frozen=True)
class Command:
    """One `topic:command` with its help, its arguments and what it runs."""

    name: str
    summary: str
    run: Runner
    args: tuple[Arg, ...] = ()
    description: str = ""
    examples: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    needs_app: bool = False
    json: bool = False

    @property
    def topic(self) -> str:
        """The part before ':' (`apps` for `apps:create`)."""
        return self.name.partition(":")[0]

    @property
    def group(self) -> str:
        """The module that declares it; `slipway help` lists commands by group."""
        return self.run.__module__


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    summary: str,
    *args: Arg,
    description: str = "",
    examples: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    needs_app: bool = False,
    json: bool = False,
) -> Callable[[Runner], Runner]:
    """Register the decorated function as command `name`.

    `needs_app` adds -a/--app and -r/--remote; `json` adds --json.
    """

    def register(run: Runner) -> Runner:
        if name in COMMANDS:
            raise ValueError(f"command {name} is declared twice")
        COMMANDS[name] = Command(
            name=name,
            summary=summary,
            run=run,
            args=args,
            description=description,
            examples=examples,
            aliases=aliases,
            needs_app=needs_app,
            json=json,
        )
        return run

    return register
