"""docs/events.md is the reference outside subscribers read: it must match the registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import libs.common.events  # noqa: F401 (registers every payload)
from libs.common.events import Event, EventRegistry, registry
from libs.common.events.reference import _check_defined, render_reference
from libs.common.events.visibility import tenant_event

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


def test_every_named_type_has_a_section_and_each_event_says_who_sees_it() -> None:
    text = render_reference()
    sections = {m.lower() for m in re.findall(r"^## (\w+)$", text, re.M)}
    named = set(re.findall(r"\]\(#(\w+)\)", text))
    assert named and named <= sections
    for nested in ("loadbalancersnapshot", "listenersnapshot", "poolsnapshot", "membersnapshot"):
        assert nested in named
    for name, cls in registry().types().items():
        expected = "yes" if tenant_event(cls) else "no (admins only)"
        assert f"schema_version {cls.schema_version}, tenant event: {expected}." in text, name
    assert "# Consumer guide" in text and "docs/examples/subscribe_feed.py" in text


def test_a_type_named_without_a_section_fails_the_rendering() -> None:
    with pytest.raises(ValueError, match="missing"):
        _check_defined("| `x` | [Missing](#missing) | yes |", {"Present"})
