"""Frames of the knowcache serial protocol: header, payload, CRC-32, COBS, 0x00.

    version:u8 | type:u8 | seq:u16 | length:u32 | payload | crc32:u32   (little-endian)

The CRC-32 (zlib's) covers everything before it; the frame is COBS-encoded
and ends with a 0x00 byte, so a lost or corrupted byte costs one frame and
the reader resynchronizes at the next delimiter. Mirrors
runtime_cpp/device/serial_protocol.cc.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from cobs import cobs

VERSION = 1
MAX_PAYLOAD = 256 * 1024
RESPONSE = 0x80
_HEADER = struct.Struct("<BBHI")


class Msg(enum.IntEnum):
    HELLO = 0x01
    LIST = 0x02
    PUT_BEGIN = 0x03
    PUT_CHUNK = 0x04
    PUT_COMMIT = 0x05
    DELETE = 0x06
    INFER = 0x07
    STATS = 0x08
    ERROR = 0x7F


class FrameError(ValueError):
    """A frame that fails its checks (the receiver drops it)."""


@dataclass
class Frame:
    type: int
    seq: int
    payload: bytes = b""


def encode(frame: Frame) -> bytes:
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} bytes is over the {MAX_PAYLOAD} limit")
    body = _HEADER.pack(VERSION, frame.type, frame.seq, len(frame.payload)) + frame.payload
    body += struct.pack("<I", zlib.crc32(body))
    return cobs.encode(body) + b"\x00"


def parse(encoded: bytes) -> Frame:
    """One frame from its COBS bytes (without the delimiter)."""
    try:
        body = cobs.decode(encoded)
    except cobs.DecodeError as e:
        raise FrameError(f"COBS: {e}") from None
    if len(body) < _HEADER.size + 4:
        raise FrameError("frame shorter than its header and CRC")
    version, type_, seq, length = _HEADER.unpack_from(body)
    if len(body) != _HEADER.size + length + 4:
        raise FrameError("frame length field does not match")
    if struct.unpack_from("<I", body, len(body) - 4)[0] != zlib.crc32(body[:-4]):
        raise FrameError("frame CRC-32 mismatch")
    if version != VERSION:
        raise FrameError(f"protocol version {version}; this side speaks {VERSION}")
    return Frame(type_, seq, bytes(body[_HEADER.size:-4]))


class Decoder:
    """Feed bytes, get whole frames; bad ones are counted and dropped."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.bad = 0

    def feed(self, data: bytes) -> list[Frame]:
        out = []
        parts = (bytes(self.buf) + bytes(data)).split(b"\x00")
        self.buf = bytearray(parts.pop())
        if len(self.buf) > 2 * MAX_PAYLOAD:     # no delimiter for too long: garbage
            self.buf.clear()
            self.bad += 1
        for part in parts:
            if not part:
                continue
            try:
                out.append(parse(part))
            except FrameError:
                self.bad += 1
        return out
