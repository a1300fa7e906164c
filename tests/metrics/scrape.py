"""Scraping a service's metrics socket and reading the samples, as Prometheus would."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(socket: Path, accept: str | None = None) -> tuple[str, str]:
    """The body and content type `GET /metrics` answers on the unix socket `socket`."""
    headers = {"Accept": accept} if accept else {}
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as session,
        session.get("http://metrics/metrics", headers=headers) as answer,
    ):
        assert answer.status == 200, answer.status
        return await answer.text(), answer.headers["Content-Type"]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def samples(socket: Path) -> Samples:
    """The service's samples right now."""
    text, _ = await scrape(socket)
    return parse(text)


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it does not exist yet (a counter never incremented)."""
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in found.items() if n == name and wanted <= lab)


def label_values(found: Samples, name: str, label: str) -> set[str]:
    """Every value the label `label` takes on the samples of `name`."""
    return {dict(lab)[label] for (n, lab), _ in found.items() if n == name and label in dict(lab)}
