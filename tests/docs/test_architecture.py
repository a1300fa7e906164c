"""docs/architecture.md names only what exists: services, their folders, subjects, state paths."""

from __future__ import annotations

import re
from pathlib import Path

from slipway.contracts.catalog import catalog
from slipway.contracts.subjects import Service
from slipway.libs.snapshot.manifest import STORAGE_PREFIX

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
CODE = "\n".join(
    path.read_text()
    for folder in ("services", "libs", "contracts")
    for path in (ROOT / folder).rglob("*.py")
)
TICKED = re.compile(r"`([^`]+)`")
REPO_FOLDERS = ("services/", "libs/", "contracts/", "cli/", "scripts/", "tests/", "docs/")


def doc() -> str:
    """The page without its fenced blocks (the diagram's source), whose ``` would pair up."""
    return re.sub(r"^```.*?^```$", "", DOC.read_text(), flags=re.S | re.M)


def service_rows() -> list[list[str]]:
    """The rows of the table of services (the one whose header starts `| service |`)."""
    text = doc()
    table = text[text.index("| service | its folder |") :].split("\n\n", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]
    ]


def test_the_services_table_names_every_service_and_its_folder() -> None:
    """Exactly the services of contracts/subjects.Service, each with its existing folder."""
    rows = service_rows()
    assert sorted(row[0] for row in rows) == sorted(s.value for s in Service)
    for row in rows:
        folder = TICKED.findall(row[1])[0]
        assert (ROOT / folder / "app.py").is_file(), row


def test_every_subject_named_is_declared() -> None:
    """Each `slipway.rpc|cmd|evt.…` is in the catalog; each `slipway.live.<kind>.*` a LiveSpec."""
    declared = catalog()
    exact = {r.subject for r in declared.rpcs} | {c.subject for c in declared.commands}
    exact |= {e.subject for e in declared.events}
    kinds = {live.kind for live in declared.lives}
    named = [t for t in TICKED.findall(doc()) if t.startswith("slipway.") and "<" not in t]
    assert len(named) > 15, named  # the page really does name subjects
    for subject in named:
        if subject.startswith("slipway.live."):
            assert subject.split(".")[2] in kinds and subject.endswith(".*"), subject
        else:
            assert subject in exact, f"docs/architecture.md names {subject}, which is not declared"


def test_every_state_path_named_is_spelled_in_the_code() -> None:
    """Each state folder and file named (`gateway/gateway.db`, `registry/`) is in the code."""
    paths = {
        t
        for t in TICKED.findall(doc())
        if re.fullmatch(r"[a-z][a-z-]*/[^ ]*", t) and not t.startswith(REPO_FOLDERS)
    }
    assert {"gateway/", "keyring/keyring.db", "registry/"} <= paths, paths
    for path in sorted(paths):
        if path.startswith(STORAGE_PREFIX.split("/")[0] + "/"):
            assert STORAGE_PREFIX.startswith(path.rstrip("/")), path
            continue
        for segment in filter(None, path.split("/")):
            if "<" in segment:
                continue
            assert f'"{segment}"' in CODE or f'"{segment}/' in CODE or f"/{segment}" in CODE, (
                f"docs/architecture.md names {path}: {segment!r} is spelled nowhere in the code"
            )


def test_every_file_of_the_repository_named_exists() -> None:
    """`contracts/subjects.py`, `libs/natsauth.py`, …: a moved file is caught here."""
    named = [t for t in TICKED.findall(doc()) if t.startswith(REPO_FOLDERS) and "<" not in t]
    assert len(named) > 5, named
    missing = [path for path in named if not (ROOT / path).exists()]
    assert missing == [], f"docs/architecture.md names files that do not exist: {missing}"
