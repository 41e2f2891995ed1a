"""The heartbeat wire format, shared by the amphora's sender and the health service's receiver.

A datagram is ``zlib(json) || hex(HMAC-SHA256(heartbeat_key, compressed))``: the 64 ASCII hex
digits of the MAC close it (any valid zlib stream: the sender's is ``_seal``'s). The JSON is
Octavia's version 3 message::

    {"id": amphora_id, "seq": n, "ver": 3,
     "listeners": {listener_id: {"status": "OPEN"|"FULL",
                                 "stats": {"rx", "tx", "conns", "totconns", "ereq"}}},
     "pools": {"<pool_id>:<listener_id>": {"status": "UP"|"DOWN",
                                           "members": {member_id: "UP"|"DOWN"|"DRAIN"|
                                                                  "MAINT"|"no check"},
                                           "member_stats": {member_id: {"rx", "tx", "conns",
                                                                        "totconns", "ereq"}}}}}

``rx``, ``tx``, ``totconns`` and ``ereq`` are deltas since the previous heartbeat, ``conns`` is
the current count. ``member_stats`` is Fulcrum's addition to the v3 message (Octavia's receiver
ignores it, and a message without it decodes with no member counters): a member's traffic
through that pool's backend, ``ereq`` counting its failed responses (HAProxy's ``eresp``).
``cpu`` (also Fulcrum's, absent when unknown) is the cores of CPU the amphora's HAProxy used
since the previous heartbeat (CPU seconds over elapsed seconds; the autoscaler's CPU rules).

``seq`` grows strictly per amphora (the sender uses wall-clock milliseconds,
so it keeps growing across agent restarts). Pure module: stdlib and pydantic only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
import zlib
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from libs.common.errors import FulcrumError

MESSAGE_VERSION: Final = 3  # Octavia's v3 shape: pools keyed "<pool_id>:<listener_id>"
MAC_LENGTH: Final = 64  # hex digits of an HMAC-SHA256
MAX_DATAGRAM: Final = 64 * 1024
# Bound on the decompressed JSON: a tiny datagram must not inflate into memory exhaustion.
MAX_MESSAGE: Final = 1024 * 1024


class HeartbeatRejected(FulcrumError):
    """A datagram that is not an authentic, well-formed heartbeat; ``reason`` names why."""

    reason: str = "garbled"


class BadSignature(HeartbeatRejected):
    reason = "bad_hmac"


class Oversized(HeartbeatRejected):
    reason = "oversized"


class Garbled(HeartbeatRejected):
    reason = "garbled"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ListenerStats(_Wire):
    """The counters of a listener, or of a member within one pool."""

    rx: int = Field(default=0, ge=0)
    tx: int = Field(default=0, ge=0)
    conns: int = Field(default=0, ge=0)
    totconns: int = Field(default=0, ge=0)
    ereq: int = Field(default=0, ge=0)


class ListenerReport(_Wire):
    status: str
    stats: ListenerStats = ListenerStats()


class PoolReport(_Wire):
    status: str
    members: dict[str, str] = Field(default_factory=dict)
    member_stats: dict[str, ListenerStats] = Field(default_factory=dict)


class Heartbeat(_Wire):
    """One decoded heartbeat. Status strings are kept as HAProxy spells them."""

    id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0)
    ver: int
    listeners: dict[str, ListenerReport] = Field(default_factory=dict)
    pools: dict[str, PoolReport] = Field(default_factory=dict)
    # Fulcrum's addition: cores of CPU HAProxy used since the previous heartbeat.
    cpu: float | None = Field(default=None, ge=0)


def sign(body: bytes, key: bytes) -> bytes:
    """The hex HMAC-SHA256 of ``body`` (one-shot ``hmac.digest``: a third of ``hmac.new``'s
    CPU; ``Signer`` where one key signs many)."""
    return hmac.digest(key, body, "sha256").hex().encode("ascii")


class Signer:
    """``sign`` under one key, for the health service, which signs every datagram it receives,
    and for a sender: HMAC's keyed state is made once and copied per datagram (2.3 us here,
    where ``hmac.digest``, which sets the key up anew each time, takes 2.7 to 5.3; in an agent
    host, where a beat finds caches cold, 9-17 us against 30-80)."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def sign(self, body: bytes) -> bytes:
        """What ``sign(body, key)`` gives."""
        mac = self._keyed.copy()
        mac.update(body)
        return mac.hexdigest().encode("ascii")


def encode(message: dict[str, Any], key: bytes) -> bytes:
    """The datagram for ``message`` (a v3 dict), signed with ``key``. The JSON opens with
    ``id``, ``seq`` and ``cpu`` (when present), the fields that change beat after beat, as
    ``split_seq`` reads them."""
    leading: dict[str, Any] = {name: message[name] for name in _LEADING if name in message}
    if not leading:
        body = zlib.compress(rest(message).json, 9)
        return body + sign(body, key)
    return _seal(_head(leading), rest(message), Signer(key))


@dataclass(frozen=True, eq=False)
class Rest:
    """A message but for its ``id``, ``seq`` and ``cpu`` (``rest``): what every datagram of it
    ends with, compressed once, however many datagrams spell it with a new seq and cpu."""

    json: bytes
    """Its JSON (``{}`` when it has no field)."""
    tail: bytes
    """What the message's text holds after its leading fields' ``{"id":..,"seq":..`` (no
    closing brace): ``,`` and the JSON's fields, or ``}`` alone."""
    deflated: bytes
    """``tail`` as the final block(s) of a raw deflate stream."""

    @classmethod
    def of(cls, json_text: bytes) -> Rest:
        tail = b"}" if json_text == b"{}" else b"," + json_text[1:]
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        return cls(json_text, tail, deflater.compress(tail) + deflater.flush())


def rest(message: dict[str, Any]) -> Rest:
    """``message`` without its ``id``, ``seq`` and ``cpu``: what ``encode_parts`` completes (a
    sender whose message did not change keeps this and spells those three)."""
    return Rest.of(_dumps({name: value for name, value in message.items() if name not in _LEADING}))


def encode_parts(amphora_id: str, seq: int, cpu: float | None, rest: Rest, signer: Signer) -> bytes:
    """The bytes ``encode`` makes, under ``signer``'s key, of the message ``rest`` (from
    ``rest``) completed with ``id``, ``seq`` and, unless None, ``cpu``."""
    leading: dict[str, Any] = {"id": amphora_id, "seq": seq}
    if cpu is not None:
        leading["cpu"] = cpu
    return _seal(_head(leading), rest, signer)


def _head(leading: dict[str, Any]) -> bytes:
    """The text of ``leading``'s fields that opens the message (no closing brace)."""
    return _dumps(leading)[:-1]


def _dumps(value: Any) -> bytes:
    return _COMPACT.encode(value).encode()


# json.dumps with separators builds an encoder per call; a beat spells two objects.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))
# A zlib stream's header (deflate, 32 KB window, "maximum compression", no dictionary).
_ZLIB_HEADER: Final = b"\x78\xda"
_MAX_STORED: Final = 0xFFFF  # bytes in one stored deflate block
# A stored block that is not the last: BFINAL 0, BTYPE 00 (a zero byte), then LEN and NLEN
# (its one's complement), then LEN bytes as they are. ``_seal`` opens its stream with the zlib
# header and such a block; ``RepeatDecoder`` reads it back (``_stored_head_end``).
_STORED_BLOCK: Final = b"\x00"
_STORED_LENGTHS: Final = struct.Struct("<HH")
_STORED_START: Final = _ZLIB_HEADER + _STORED_BLOCK
_STORED_AT: Final = len(_STORED_START) + _STORED_LENGTHS.size
_CHECKSUM: Final = 4  # the Adler-32 closing a zlib stream


def _checksum(head: bytes, rest: bytes) -> int:
    """The Adler-32 of ``head + rest`` (what closes a sealed stream)."""
    return zlib.adler32(rest, zlib.adler32(head))


def _seal(head: bytes, rest: Rest, signer: Signer) -> bytes:
    """The signed zlib stream of ``head + rest.tail``: the head, which changes beat after beat,
    in stored (uncompressed) blocks, then ``rest``'s deflated blocks, made once per message:
    a beat compresses nothing (zlib at level 9 was most of an idle beat's CPU). Back-references
    reach only within ``rest``'s blocks, which were deflated on their own."""
    parts = [_ZLIB_HEADER]
    for start in range(0, len(head), _MAX_STORED):
        chunk = head[start : start + _MAX_STORED]
        lengths = _STORED_LENGTHS.pack(len(chunk), len(chunk) ^ _MAX_STORED)
        parts += (_STORED_BLOCK, lengths, chunk)
    parts += (rest.deflated, struct.pack(">I", _checksum(head, rest.tail)))
    body = b"".join(parts)
    return body + signer.sign(body)


def decode(
    datagram: bytes,
    key: bytes,
    *,
    max_datagram: int = MAX_DATAGRAM,
    max_message: int = MAX_MESSAGE,
) -> Heartbeat:
    """Verify and parse one datagram.

    The MAC is checked (constant time) before anything is decompressed, so nothing from an
    unauthenticated sender reaches zlib or the JSON parser. Raises Oversized (datagram or
    inflated message past its bound), BadSignature, or Garbled (not zlib, not JSON, not a
    version 3 heartbeat).
    """
    return parse(open_datagram(datagram, Signer(key), max_datagram, max_message))


def open_datagram(datagram: bytes, signer: Signer, max_datagram: int, max_message: int) -> bytes:
    """The message (JSON text) of an authentic datagram; raises as ``decode``."""
    return inflate(authentic_body(datagram, signer, max_datagram), max_message)


def authentic_body(datagram: bytes, signer: Signer, max_datagram: int) -> bytes:
    """The zlib stream of a datagram whose MAC matches (checked in constant time before
    anything is decompressed, so nothing from an unauthenticated sender reaches zlib); raises
    Oversized or BadSignature."""
    if len(datagram) > max_datagram:
        raise Oversized(f"datagram of {len(datagram)} bytes exceeds {max_datagram}")
    if len(datagram) <= MAC_LENGTH:
        raise BadSignature("datagram too short to carry a MAC")
    body, mac = datagram[:-MAC_LENGTH], datagram[-MAC_LENGTH:]
    if not hmac.compare_digest(mac, signer.sign(body)):
        raise BadSignature("MAC does not match")
    return body


def inflate(body: bytes, max_message: int) -> bytes:
    """The text of a zlib stream; raises Oversized past ``max_message`` bytes, or Garbled."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(body, max_message)
    except zlib.error as exc:
        raise Garbled(f"not zlib: {exc}") from None
    if inflater.unconsumed_tail:
        raise Oversized(f"message inflates past {max_message} bytes")
    if not inflater.eof:
        raise Garbled("truncated zlib stream")
    return text


def parse(text: bytes) -> Heartbeat:
    """The heartbeat of a message; raises Garbled."""
    try:
        heartbeat = Heartbeat.model_validate_json(text)
    except ValidationError as exc:
        raise Garbled(f"not a heartbeat: {exc.errors()[0]['msg']}") from None
    if heartbeat.ver != MESSAGE_VERSION:
        raise Garbled(f"unsupported message version {heartbeat.ver}")
    return heartbeat


_LEADING: Final = ("id", "seq", "cpu")
_CPU_MARK: Final = b'"cpu":'
# What ``encode`` writes first: the id, seq as a JSON integer, then "cpu" with a JSON number
# that is not negative (as json.dumps writes a float or an int) when the message has one.
_NUMBER: Final = rb"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_HEAD: Final = re.compile(
    rb'\{"id":"([^"]*)","seq":(0|[1-9][0-9]*),(?:"cpu":(' + _NUMBER + rb"),)?"
)
# The same fields as ``_seal`` stores them, uncompressed: with no comma after the last.
_STORED_HEAD: Final = re.compile(
    rb'\{"id":"([^"]*)","seq":(0|[1-9][0-9]*)(?:,"cpu":(' + _NUMBER + rb"))?"
)


def split_seq(text: bytes) -> tuple[bytes, int, float | None, bytes] | None:
    """``(id, seq, cpu, rest)`` of a message spelled as ``encode`` spells it (``{"id":"<id>",
    "seq":<n>,`` then ``"cpu":<x>,`` if it has one, then ``rest``), else None. Two such
    messages with the same id and rest are the same heartbeat but for ``seq`` and ``cpu``:
    what ``RepeatDecoder`` relies on. ``rest`` opens with the comma before the next field."""
    head = _HEAD.match(text)
    if head is None or text.startswith(_CPU_MARK, head.end()):
        return None  # (a "cpu" the pattern did not take: not a number as encode writes it)
    sender, digits, cpu = head.groups()
    return sender, int(digits), None if cpu is None else float(cpu), text[head.end() - 1 :]


class Beat(NamedTuple):
    """One datagram as ``RepeatDecoder`` gives it. ``heartbeat`` may be the model of an earlier
    message of the same content (a repeat is not parsed again, nor copied): its ``seq`` and
    ``cpu`` are that message's; this datagram's are ``seq`` and ``cpu`` here."""

    heartbeat: Heartbeat
    seq: int
    cpu: float | None
    content: bytes | None
    """The message but for ``seq`` and ``cpu`` (equal keys, equal heartbeats but for those
    two), or None when the message is not spelled as ``encode`` spells it."""


@dataclass(slots=True)
class _Last:
    """A sender's last message: its ``rest`` (``split_seq``), its heartbeat, and once a repeat
    showed them, the deflate blocks after its stored head (``_sealed_rest``)."""

    rest: bytes
    heartbeat: Heartbeat
    deflated: bytes | None = None


class RepeatDecoder:
    """``decode``, remembering each sender's last message: one that differs from its sender's
    previous message in ``seq`` and ``cpu`` alone (an idle amphora's, beat after beat) is not
    parsed again (``Beat``). Once a sender repeated a message sealed as ``_seal`` seals it, its
    next repeats are not even inflated: their stored head (``id``, ``seq``, ``cpu``) is read as
    is, and the rest of their zlib stream, byte for byte the previous one's, is known to
    inflate to the same text (see ``_repeat``). Call ``forget_others`` to drop the senders no
    longer known."""

    def __init__(self, key: bytes, max_datagram: int, max_message: int = MAX_MESSAGE) -> None:
        self._signer = Signer(key)
        self._max_datagram = max_datagram
        self._max_message = max_message
        self._last: dict[bytes, _Last] = {}

    def decode(self, datagram: bytes) -> Beat:
        """Raises as ``decode`` (the module's function) does."""
        body = authentic_body(datagram, self._signer, self._max_datagram)
        repeat = self._repeat(body)
        if repeat is not None:
            return repeat
        text = inflate(body, self._max_message)
        split = split_seq(text)
        if split is None:
            heartbeat = parse(text)
            return Beat(heartbeat, heartbeat.seq, heartbeat.cpu, None)
        sender, seq, cpu, rest = split
        last = self._last.get(sender)
        if last is not None and last.rest == rest:
            if last.deflated is None:
                last.deflated = _sealed_rest(body, text, rest)
            return Beat(last.heartbeat, seq, cpu, rest)
        heartbeat = parse(text)
        self._last[sender] = _Last(rest, heartbeat)
        return Beat(heartbeat, seq, cpu, rest)

    def _repeat(self, body: bytes) -> Beat | None:
        """The beat of ``body`` if it repeats its sender's last message, sealed as that one
        was, else None. What inflating it would give: ``body`` is a zlib header, a stored block
        of a head that ``_STORED_HEAD`` takes whole, then the very deflate blocks of the last
        message, which inflate to its ``rest`` on their own (no back-reference reaches before
        them), then the checksum of the head and that rest. So it inflates to head + rest, of
        which ``split_seq`` gives the head's id, seq and cpu, and that rest."""
        end = _stored_head_end(body)
        if end is None or len(body) < end + _CHECKSUM:
            return None
        head = body[_STORED_AT:end]
        fields = _STORED_HEAD.fullmatch(head)
        if fields is None:
            return None
        sender, digits, cpu = fields.groups()
        last = self._last.get(sender)
        if (
            last is None
            or last.deflated is None
            or body[end:-_CHECKSUM] != last.deflated
            or len(head) + len(last.rest) > self._max_message
            or int.from_bytes(body[-_CHECKSUM:]) != _checksum(head, last.rest)
        ):
            return None
        return Beat(last.heartbeat, int(digits), None if cpu is None else float(cpu), last.rest)

    def forget_others(self, known: Container[str]) -> None:
        """Forget the senders whose ids are not in ``known``."""
        for sender in [s for s in self._last if s.decode(errors="replace") not in known]:
            del self._last[sender]


def _stored_head_end(body: bytes) -> int | None:
    """Where the stored block that opens ``body`` as ``_seal`` opens a stream ends (its bytes
    from ``_STORED_AT``); None when ``body`` does not open so."""
    if len(body) < _STORED_AT or not body.startswith(_STORED_START):
        return None
    length: int
    complement: int
    length, complement = _STORED_LENGTHS.unpack_from(body, len(_STORED_START))
    if length ^ complement != _MAX_STORED:
        return None
    return _STORED_AT + length


def _sealed_rest(body: bytes, text: bytes, rest: bytes) -> bytes | None:
    """The deflate blocks of ``body`` (a zlib stream of ``text``, whose ``split_seq`` rest is
    ``rest``) after a stored block of exactly the text before ``rest``, if they inflate on their
    own to ``rest`` and end where the checksum begins; else None."""
    end = _stored_head_end(body)
    if end is None or body[_STORED_AT:end] + rest != text:
        return None
    deflated = body[end:-_CHECKSUM]
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw: no header, no checksum
    try:
        alone = inflater.decompress(deflated, len(rest) + 1)
    except zlib.error:  # e.g. a distance too far back: a reference into the stored head
        return None
    if alone != rest or not inflater.eof or inflater.unused_data:
        return None
    return deflated
