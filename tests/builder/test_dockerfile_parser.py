"""The Dockerfile parser, `$VAR` substitution, `.dockerignore` and the base-image allow-list."""

from __future__ import annotations

import pytest

from slipway.services.builder.dockerfile.bases import allowed_bases, check_name
from slipway.services.builder.dockerfile.dockerignore import Ignore
from slipway.services.builder.dockerfile.errors import BaseImageRefused, DockerfileError
from slipway.services.builder.dockerfile.parser import parse, parse_pairs
from slipway.services.builder.dockerfile.words import expand_word, expand_words

RUN_STACK = "slipway/stack-run:bookworm"
ALLOWED = allowed_bases(RUN_STACK, "slipway/stack-build:bookworm", "example/base:1")


def test_continuations_join_and_drop_comments_inside() -> None:
    """A trailing backslash joins lines; comment and blank lines inside are dropped."""
    (stage,) = parse(f"FROM {RUN_STACK}\nRUN echo a \\\n# note\n\n  && echo b\n").stages
    (run,) = stage.instructions
    assert run.keyword == "RUN"
    assert run.args == "echo a   && echo b"
    assert run.line == 2


def test_escape_directive_changes_the_continuation_character() -> None:
    """`# escape=`` makes the backtick the line continuation (Windows-style Dockerfiles)."""
    parsed = parse(f"# escape=`\nFROM {RUN_STACK}\nRUN echo a `\n  b\n")
    assert parsed.escape == "`"
    assert parsed.stages[0].instructions[0].args == "echo a   b"


def test_exec_form_is_read_as_json_and_shell_form_is_kept() -> None:
    """`CMD ["a", "b"]` is the exec form; `CMD a b` and broken JSON are the shell form."""
    stage = parse(f'FROM {RUN_STACK}\nCMD ["python3", "app.py"]\nCMD [oops\nCMD a b\n').stages[0]
    assert [i.exec_form for i in stage.instructions] == [["python3", "app.py"], None, None]


def test_stages_with_names_and_global_args_in_from() -> None:
    """ARG before FROM feeds FROM; `AS name` names a stage (lower-cased)."""
    text = "ARG TAG=bookworm\nFROM slipway/stack-build:${TAG} AS Build\nFROM ${BASE:-x/y:1}\n"
    first, second = parse(text).stages
    assert (first.base, first.name) == ("slipway/stack-build:bookworm", "build")
    assert (second.base, second.name) == ("x/y:1", None)


def test_onbuild_is_refused_with_a_reason() -> None:
    """ONBUILD fails the parse, saying what to do instead."""
    with pytest.raises(DockerfileError, match="ONBUILD is not supported"):
        parse(f"FROM {RUN_STACK}\nONBUILD RUN echo\n")


def test_heredoc_is_refused_with_a_reason() -> None:
    """`RUN <<EOF` fails the parse, naming the line and the alternative."""
    with pytest.raises(DockerfileError, match="line 2: heredocs"):
        parse(f"FROM {RUN_STACK}\nRUN <<EOF\necho hi\nEOF\n")


def test_run_mount_is_refused() -> None:
    """BuildKit's `RUN --mount` is refused by name."""
    with pytest.raises(DockerfileError, match="RUN does not accept --mount"):
        parse(f"FROM {RUN_STACK}\nRUN --mount=type=cache,target=/x echo\n")


def test_instruction_before_from_is_refused() -> None:
    """Only ARG may come before the first FROM."""
    with pytest.raises(DockerfileError, match="RUN before FROM"):
        parse("RUN echo\nFROM x\n")


def test_substitution_forms() -> None:
    """$VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt}; single quotes keep $ literal."""
    env = {"A": "1", "EMPTY": ""}
    assert (
        expand_word("$A-${A}-${B:-dflt}-${A:+alt}-${EMPTY:-e}-${EMPTY-e}", env) == "1-1-dflt-alt-e-"
    )
    assert expand_words("'$A' \"$A b\" c\\ d \\$A", env) == ["$A", "1 b", "c d", "$A"]


def test_env_pairs_and_legacy_form() -> None:
    """ENV k=v k2="v 2" and the old `ENV k v w` both parse."""
    stage = parse(f'FROM {RUN_STACK}\nENV A=1 B="two words"\nENV C more words\n').stages[0]
    first, second = stage.instructions
    assert parse_pairs(first, "\\", {}) == {"A": "1", "B": "two words"}
    assert parse_pairs(second, "\\", {}) == {"C": "more words"}


def test_dockerignore_patterns_exceptions_and_double_star() -> None:
    """Go filepath.Match syntax, `**`, `!` exceptions (last match wins), folders cover contents."""
    ignore = Ignore(["node_modules", "**/*.log", "!keep.log", "/secret/", "docs/[a-c]*", "# c"])
    assert ignore.ignored("node_modules/pkg/index.js")
    assert ignore.ignored("deep/down/app.log")
    assert not ignore.ignored("keep.log")
    assert ignore.ignored("secret/key")
    assert ignore.ignored("docs/b.md")
    assert not ignore.ignored("docs/d.md")
    assert not ignore.ignored("src/app.py")


@pytest.mark.parametrize("name", ["3f2a9c1b7d4e", "abc", "sha256:" + "a" * 64, "DEADBEEF"])
def test_image_ids_are_refused_as_bases(name: str) -> None:
    """Any hex name (an ID or a prefix the engine would resolve) is refused."""
    with pytest.raises(BaseImageRefused, match="an image ID is not allowed"):
        check_name(name, ALLOWED)


@pytest.mark.parametrize(
    "name", ["slipway/app-abc:1", "registry.local:5000/apps/abc:v2", "registry.local/apps/abc"]
)
def test_app_images_are_refused_even_if_allowed(name: str) -> None:
    """An app's image (local tag or registry repository) is never a base."""
    allowed = allowed_bases(RUN_STACK, "b:1", name)
    with pytest.raises(BaseImageRefused, match="another app's image"):
        check_name(name, allowed)


def test_allowed_names_and_scratch_pass() -> None:
    """The stacks, the operator's list and scratch are allowed; a missing tag means :latest."""
    assert check_name(RUN_STACK, ALLOWED) == RUN_STACK
    assert check_name("docker.io/example/base:1", ALLOWED) == "example/base:1"
    assert check_name("scratch", ALLOWED) == "scratch"
    with pytest.raises(BaseImageRefused, match="not an allowed base image"):
        check_name("example/base", ALLOWED)  # :latest is not the allowed :1
