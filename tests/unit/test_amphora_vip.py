"""The gratuitous ARP frames the agent sends for a VIP (RFC 5227 announcements)."""

from __future__ import annotations

import struct

from services.amphora.adapters.vip import garp_frames

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
