"""Hand-encoding of the few protobuf fields we pre-serialise.

Responses are assembled from bytes that were serialised once per content change and
shared by every stream (DESIGN §5), so a push costs a concatenation, not a re-encode.
Protobuf allows a message's fields in any order and concatenated encodings merge, which
is what makes this exact.
"""

from __future__ import annotations

_LEN = 2  # wire type for length-delimited fields


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message)."""
    return varint((number << 3) | _LEN) + varint(len(payload)) + payload


def field_str(number: int, text: str) -> bytes:
    if not text:
        return b""  # proto3 omits empty strings
    return field_bytes(number, text.encode())


def any_bytes(type_url: str, value: bytes) -> bytes:
    """A serialised google.protobuf.Any (type_url = 1, value = 2)."""
    return field_str(1, type_url) + field_bytes(2, value)
