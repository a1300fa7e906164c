"""Contracts used only by the bus tests: a command kind and an event kind."""

from __future__ import annotations

from slipway.contracts import subjects
from slipway.contracts.base import Command, CommandSpec, Event, EventSpec
from slipway.contracts.subjects import Service


class Work(Command, tag="test.work.v1", frozen=True, kw_only=True):
    item: int
    fail_times: int = 0


class Happened(Event, tag="test.happened.v1", frozen=True, kw_only=True):
    item: int


def work_spec(service: Service = Service.BUILDER) -> CommandSpec[Work]:
    return CommandSpec(service, "work", subjects.cmd(service, "work"), Work)


def happened_spec() -> EventSpec[Happened]:
    return EventSpec(subjects.evt("test", "happened"), Happened)
