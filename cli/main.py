"""Entry point of `slipway`: parse `topic:command` arguments, run the command, report errors.

Exit status: 0 success, 1 an expected failure (one line on stderr, no traceback),
2 a usage error, 130 interrupted. SLIPWAY_DEBUG=1 shows tracebacks of bugs.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from slipway.cli import commands, output
from slipway.cli.client import USER_AGENT
from slipway.cli.errors import CliError, UsageError
from slipway.cli.registry import COMMANDS, Command, Context

PROG = "slipway"
HELP_WORDS = ("help", "-h", "--help")
VERSION_WORDS = ("version", "--version", "-v")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, raised instead of printed."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`).")


def _lookup() -> dict[str, Command]:
    """Every command by its name and by each alias."""
    commands.load()
    table = dict(COMMANDS)
    for cmd in COMMANDS.values():
        for alias in cmd.aliases:
            table[alias] = cmd
    return table


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one subparser per command, named `topic:command`."""
    parser = _Parser(prog=PROG, add_help=False, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command_name", parser_class=_Parser, metavar="COMMAND")
    commands.load()
    for cmd in COMMANDS.values():
        child = sub.add_parser(
            cmd.name,
            aliases=list(cmd.aliases),
            help=cmd.summary,
            description=_description(cmd),
            epilog=_epilog(cmd),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        _add_arguments(child, cmd)
        child.set_defaults(command=cmd)
    return parser


def _add_arguments(parser: argparse.ArgumentParser, cmd: Command) -> None:
    for declared in cmd.args:
        parser.add_argument(*declared.flags, **declared.options)
    if cmd.needs_app:
        parser.add_argument("-a", "--app", metavar="APP", help="app to run the command against")
        parser.add_argument("-r", "--remote", metavar="REMOTE", help="git remote of the app to use")
    if cmd.json:
        parser.add_argument("--json", action="store_true", help="print the API's JSON")


def _description(cmd: Command) -> str:
    text = cmd.summary[:1].upper() + cmd.summary[1:] + "."
    return f"{text}\n\n{cmd.description.strip()}" if cmd.description else text


def _epilog(cmd: Command) -> str | None:
    parts: list[str] = []
    if cmd.examples:
        parts.append("examples:\n" + "\n".join(f"  $ {line}" for line in cmd.examples))
    if ":" not in cmd.name:
        related = [c for c in COMMANDS.values() if c.topic == cmd.name and c is not cmd]
        if related:
            parts.append(f"other {cmd.name} commands:\n" + _command_lines(related))
    return "\n\n".join(parts) or None


def _command_lines(cmds: Sequence[Command]) -> str:
    width = max(len(c.name) for c in cmds) + 2
    return "\n".join(f"  {c.name:<{width}}{c.summary}" for c in cmds)


def overview() -> str:
    """`slipway help`: every command, grouped by topic."""
    commands.load()
    groups: dict[str, list[Command]] = {}
    for cmd in COMMANDS.values():
        groups.setdefault(cmd.group, []).append(cmd)
    width = max(len(name) for name in COMMANDS) + 2
    blocks = [
        "\n".join(f"  {c.name:<{width}}{c.summary}" for c in group) for group in groups.values()
    ]
    return (
        f"Usage: {PROG} COMMAND [options]\n\n"
        "A Heroku-style command line for Slipway.\n"
        f"Run `{PROG} help COMMAND` or `{PROG} COMMAND --help` for a command's options.\n\n"
        "Commands:\n" + "\n\n".join(blocks) + "\n\n"
        "Environment: SLIPWAY_API_URL, SLIPWAY_API_KEY (override the stored login),\n"
        "SLIPWAY_APP (default app), SLIPWAY_CONFIG_DIR (default ~/.config/slipway)."
    )


def help_text(topic: str | None) -> str:
    """Help for the whole CLI, one command, or every command of a topic."""
    if topic is None:
        return overview()
    table = _lookup()
    if topic in table:
        parser = build_parser()
        return _subparser(parser, table[topic].name).format_help().rstrip()
    related = [c for c in COMMANDS.values() if c.topic == topic]
    if related:
        return f"{topic} commands:\n" + _command_lines(related)
    raise _unknown(topic, table)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(name)


def _unknown(word: str, table: dict[str, Command]) -> UsageError:
    close = difflib.get_close_matches(word, table, n=1)
    hint = f" Perhaps you meant {close[0]}?" if close else ""
    return UsageError(f"{word} is not a {PROG} command.{hint} See `{PROG} help`.")


def run(argv: Sequence[str], context: Context) -> int:
    """Parse `argv` and run the command in `context`; errors propagate."""
    args = list(argv)
    if not args or args[0] in HELP_WORDS:
        context.out(help_text(args[1] if len(args) > 1 else None))
        return 0
    if args[0] in VERSION_WORDS:
        context.out(USER_AGENT)
        return 0
    table = _lookup()
    if args[0] not in table:
        raise _unknown(args[0], table)
    namespace = build_parser().parse_args(args)
    cmd: Command = namespace.command
    cmd.run(context, namespace)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run, and turn every expected failure into one line on stderr."""
    context = Context(env=os.environ, cwd=Path.cwd())
    try:
        return run(sys.argv[1:] if argv is None else argv, context)
    except CliError as exc:
        if exc.message:  # `slipway run` passes on the remote status and nothing else
            print(output.error_line(exc.message), file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # argparse's --help exits after printing
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`slipway apps | head -1`); stop quietly, and point
        # stdout at /dev/null so flushing at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("SLIPWAY_DEBUG"):
            raise
        print(
            output.error_line(
                f"internal error in the CLI: {type(exc).__name__}: {exc} "
                "(run again with SLIPWAY_DEBUG=1 for the traceback)"
            ),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
