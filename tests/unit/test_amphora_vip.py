"""The announcements the agent sends for a VIP: gratuitous ARP frames (RFC 5227) for IPv4,
unsolicited neighbour advertisements (RFC 4861) for IPv6."""

from __future__ import annotations

import ipaddress
import struct

from services.amphora.adapters.vip import garp_frames, unsolicited_na

MAC = bytes.fromhex("02aabbccddee")


def test_a_request_and_a_reply_each_announcing_the_address_at_our_mac() -> None:
    request, reply = garp_frames(MAC, "198.18.32.200")
    for frame, op in ((request, 1), (reply, 2)):
        assert len(frame) == 60  # padded to the Ethernet minimum
        assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC
        assert frame[12:14] == b"\x08\x06"
        htype, ptype, hlen, plen, opcode = struct.unpack("!HHBBH", frame[14:22])
        assert (htype, ptype, hlen, plen, opcode) == (1, 0x0800, 6, 4, op)
        sender_mac, sender_ip = frame[22:28], frame[28:32]
        target_ip = frame[38:42]
        assert sender_mac == MAC
        assert sender_ip == target_ip == bytes([198, 18, 32, 200])


def test_an_unsolicited_neighbour_advertisement_overrides_with_our_mac() -> None:
    message = unsolicited_na(MAC, "fd12:3456:789a:1::c8")
    assert len(message) == 32
    kind, code, checksum, flags = struct.unpack("!BBHI", message[:8])
    # Type 136, checksum left to the kernel, Override set, Solicited and Router clear.
    assert (kind, code, checksum, flags) == (136, 0, 0, 0x20000000)
    assert message[8:24] == ipaddress.IPv6Address("fd12:3456:789a:1::c8").packed
    assert message[24:26] == b"\x02\x01" and message[26:32] == MAC  # target link-layer address
