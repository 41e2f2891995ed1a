"""docs/events.md is the reference outside subscribers read: it must match the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

import libs.common.events  # noqa: F401 (registers every payload)
from libs.common.events import Event, EventRegistry
from libs.common.events.reference import render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_docs_events_md_is_in_sync_with_the_registry() -> None:
    assert DOC.read_text() == render_reference(), "run: fulcrum events docs > docs/events.md"


def test_a_duplicate_event_name_fails_at_import() -> None:
    with pytest.raises(TypeError, match="registered twice"):

        class Again(Event, name="AmphoraDeleted"):
            pass


def test_upcaster_runs_before_validation() -> None:
    class Renamed(Event):  # no name: kept out of the process-wide registry
        new_name: str

    Renamed.event_type, Renamed.schema_version = "TestRenamed", 2
    reg = EventRegistry()
    reg.register(Renamed)
    reg.register_upcaster("TestRenamed", 1, lambda d: {"new_name": d["old_name"]})
    decoded = reg.decode("TestRenamed", 1, {"old_name": "x"})
    assert isinstance(decoded, Renamed) and decoded.new_name == "x"
