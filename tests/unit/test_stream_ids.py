"""Typed stream ids: the stored ``<category>-<aggregate id>`` text, built and split in one place."""

from __future__ import annotations

import copy
import pickle
import uuid
from datetime import UTC, datetime

import pytest

from libs.common import subjects
from libs.common.events import Envelope, registry
from libs.common.events.amphora import AmphoraDeleted
from libs.common.streams import StreamCategory, StreamId

LB_ID = "6f1c1bde-2d5e-4b7a-9c41-0a3c5d9e7f10"


@pytest.mark.parametrize(
    ("built", "stored"),
    [
        (StreamId.loadbalancer(LB_ID), f"loadbalancer-{LB_ID}"),
        (StreamId.amphora("a-1"), "amphora-a-1"),
        (StreamId.secret("s1"), "secret-s1"),
        (StreamId.quota("p1"), "quota-p1"),
        (StreamId.housekeeping("r1"), "housekeeping-r1"),
        (StreamId("availabilityzone", "eu west.1"), "availabilityzone-eu west.1"),
    ],
)
def test_the_stored_format_is_category_dash_id(built: StreamId, stored: str) -> None:
    assert built == stored
    assert str(built) == stored
    assert hash(built) == hash(stored)  # interchangeable as dict keys with stored ids


def test_parse_splits_at_the_first_dash_only() -> None:
    stream = StreamId.parse(f"loadbalancer-{LB_ID}")
    assert stream.category is StreamCategory.LOADBALANCER
    assert stream.aggregate_id == LB_ID
    assert StreamId.parse(stream) == stream


@pytest.mark.parametrize("text", ["loadbalancer", "nosuchcategory-1", "amphora-", "-1", ""])
def test_parse_refuses_what_is_not_a_stream_id(text: str) -> None:
    with pytest.raises(ValueError):
        StreamId.parse(text)


def test_a_stream_id_survives_copy_and_pickle() -> None:
    stream = StreamId.amphora("a-1")
    for twin in (copy.copy(stream), copy.deepcopy(stream), pickle.loads(pickle.dumps(stream))):
        assert twin == stream
        assert isinstance(twin, StreamId)
        assert twin.aggregate_id == "a-1"


def test_every_event_category_is_a_stream_category() -> None:
    categories = {cls.category for cls in registry().types().values()}
    assert categories <= set(StreamCategory)


def test_the_envelope_and_the_subject_read_the_parts() -> None:
    envelope = Envelope(
        event_id=uuid.uuid4(),
        stream_id=StreamId.amphora("a-1"),
        stream_version=1,
        payload=AmphoraDeleted(amphora_id="a-1"),
        occurred_at=datetime.now(UTC),
    )
    assert (envelope.category, envelope.aggregate_id) == ("amphora", "a-1")
    assert subjects.event_subject(envelope.stream_id, envelope.event_type) == (
        "fulcrum.events.amphora.a-1.AmphoraDeleted"
    )
    assert StreamCategory.LOADBALANCER.prefix == "loadbalancer-"
