"""The live event feed's pure rules: resume positions, who sees what, the per-project limit,
and the cursor that passes holes in the positions only once no open transaction can fill
them."""

from __future__ import annotations

import pytest

from libs.common.errors import Forbidden, ValidationFailed
from libs.common.events.visibility import tenant_event_types
from services.api.domain.event_feed import (
    FeedCursor,
    FeedLimitReached,
    FeedScope,
    FeedSlots,
    StoredRow,
    StorePage,
    resume_position,
)
from services.api.domain.policy import RequestContext


def _page(*positions: int, xmax: int = 100, open_then: frozenset[int] = frozenset()) -> StorePage:
    return StorePage([StoredRow(p, "X", f"{p}") for p in positions], xmax, open_then)


def test_resume_position_header_wins_and_bad_values_are_refused() -> None:
    assert resume_position(None, None) is None
    assert resume_position("7", None) == 7
    assert resume_position("7", "9") == 9
    assert resume_position(None, " 0 ") == 0
    for bad in ("-1", "", "1e3", "+1", "9223372036854775808", "١"):
        with pytest.raises(ValidationFailed):
            resume_position(bad, None)
    with pytest.raises(ValidationFailed, match="Last-Event-ID"):
        resume_position("1", "x")
    with pytest.raises(ValidationFailed, match="after"):
        resume_position("x", "1")  # the header wins, but a bad argument is still refused


def test_scope_by_role() -> None:
    tenant = tenant_event_types()
    assert "LoadBalancerCreated" in tenant and "OperatingStatusChanged" in tenant
    assert not {"AmphoraFailed", "SecretStored", "FlavorCreated", "QuotaUpdated"} & tenant
    assert "LoadBalancerRedriveRequested" not in tenant
    admin = RequestContext("p" * 32, frozenset({"admin"}), is_admin=True)
    assert FeedScope.for_caller(admin, None, tenant) == FeedScope(None, None)
    assert FeedScope.for_caller(admin, "q", tenant) == FeedScope("q", None)
    observer = RequestContext("p", frozenset({"load-balancer_global_observer"}))
    assert FeedScope.for_caller(observer, None, tenant) == FeedScope(None, tenant)
    reader = RequestContext("p", frozenset({"reader"}))
    assert FeedScope.for_caller(reader, None, tenant) == FeedScope("p", tenant)
    assert FeedScope.for_caller(reader, "p", tenant) == FeedScope("p", tenant)
    for ctx, asked in [
        (reader, "q"),
        (RequestContext("p", frozenset()), None),
        (RequestContext(None, frozenset({"reader"})), None),
    ]:
        with pytest.raises(Forbidden):
            FeedScope.for_caller(ctx, asked, tenant)


def test_slots_per_project() -> None:
    slots = FeedSlots(limit=2)
    slots.take("a")
    slots.take("a")
    slots.take("b")
    with pytest.raises(FeedLimitReached) as refused:
        slots.take("a")
    assert refused.value.http_status == 429
    slots.give_back("a")
    slots.take("a")
    assert (slots.held("a"), slots.held("b"), slots.held("c")) == (2, 1, 0)


def test_contiguous_positions_pass_at_once() -> None:
    cursor = FeedCursor(3)
    assert [r.position for r in cursor.advance(_page(4, 5, 6))] == [4, 5, 6]
    assert cursor.position == 6
    assert cursor.advance(_page()) == []


def test_a_hole_waits_for_the_transactions_open_when_it_was_seen() -> None:
    cursor = FeedCursor(0)
    first = cursor.advance(_page(1, 3, 4, xmax=50, open_then=frozenset({40, 41})))
    assert [r.position for r in first] == [1]
    assert cursor.advance(_page(3, 4, xmax=52, open_then=frozenset({41}))) == []
    # 2 committed meanwhile: it arrives in order, without waiting.
    assert [r.position for r in cursor.advance(_page(2, 3, 4, xmax=52))] == [2, 3, 4]


def test_a_hole_no_open_transaction_can_fill_is_passed_on_a_later_page() -> None:
    cursor = FeedCursor(0)
    assert [r.position for r in cursor.advance(_page(1, 3, xmax=50))] == [1]  # not this page
    # 2 is missing for good; the hole before 5 is new on this page, so it waits once more.
    assert [r.position for r in cursor.advance(_page(3, 5, xmax=51))] == [3]
    assert [r.position for r in cursor.advance(_page(5, xmax=52))] == [5]
    # A hole with an open transaction waits until that transaction has ended.
    assert cursor.advance(_page(7, xmax=60, open_then=frozenset({55}))) == []
    assert cursor.advance(_page(7, xmax=61, open_then=frozenset({55}))) == []
    assert [r.position for r in cursor.advance(_page(7, 8, xmax=62))] == [7, 8]


def test_a_transaction_started_after_the_page_does_not_count_as_ended() -> None:
    page = _page(1, xmax=10, open_then=frozenset({8}))
    assert page.ended(frozenset({7}))
    assert not page.ended(frozenset({8}))
    assert not page.ended(frozenset({10}))
