"""Decoder for RNC ProPack method 1, the LZ77 + Huffman packer Beneath a Steel Sky stores most
of its speech with.

Layout of a packed block: "RNC" 0x01, unpacked length (u32 BE), packed length (u32 BE), CRC-16
of the unpacked and of the packed bytes (u16 BE each), a leeway byte and the number of chunks;
then the packed bytes. Those are read as a bit stream made of 16-bit little-endian words, least
significant bit first. Each chunk starts with three Huffman code-length tables (literal run
lengths, match distances, match lengths) and a 16-bit count of steps; each step copies a run of
literal bytes straight from the input (the bit stream resumes after them), then, except on the
last step, one back-reference. Written from the format description in docs/real-speech.md.
"""

from __future__ import annotations

from voxmeter.errors import DataError

MAGIC = b"RNC\x01"
HEADER = 18


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16 with the reflected 0xA001 polynomial and a zero start (CRC-16/ARC)."""
    crc, table = 0, _CRC
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


class _Bits:
    """LSB-first bits over 16-bit LE words; `pos` is the first byte not yet taken as bits."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos, self.bits, self.count = data, pos, 0, 0

    def _word(self, at: int) -> int:
        if at + 2 > len(self.data):
            raise IndexError("bit stream ends early")
        return self.data[at] | (self.data[at + 1] << 8)

    def peek16(self) -> int:
        if self.count >= 16:
            return self.bits & 0xFFFF
        word = self._word(self.pos) if self.pos + 2 <= len(self.data) else 0
        return (self.bits | (word << self.count)) & 0xFFFF

    def read(self, n: int) -> int:
        while self.count < n:
            self.bits |= self._word(self.pos) << self.count
            self.pos += 2
            self.count += 16
        value = self.bits & ((1 << n) - 1)
        self.bits >>= n
        self.count -= n
        return value

    def take_bytes(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IndexError("literal run past the end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _table(bits: _Bits) -> tuple[list[tuple[int, int]], int]:
    """A code table: a lookup of `2**width` slots -> (symbol, code length), and `width`."""
    n = bits.read(5)
    lengths = [bits.read(4) for _ in range(n)]
    width = max(lengths, default=0) or 1
    lookup: list[tuple[int, int]] = [(-1, 0)] * (1 << width)
    code = 0  # canonical codes, shortest first, counted from the top of 16 bits
    for length in range(1, 17):
        for symbol, sym_len in enumerate(lengths):
            if sym_len != length:
                continue
            forward = code >> (16 - length)
            rev = int(f"{forward:0{length}b}"[::-1], 2)  # the stream is LSB first
            for hi in range(1 << (width - length)):
                lookup[rev | (hi << length)] = (symbol, length)
            code += 1 << (16 - length)
    return lookup, width


def _value(bits: _Bits, table: tuple[list[tuple[int, int]], int]) -> int:
    lookup, width = table
    symbol, length = lookup[bits.peek16() & ((1 << width) - 1)]
    if symbol < 0:
        raise ValueError("no Huffman code matches")
    bits.read(length)
    if symbol < 2:
        return symbol
    extra = symbol - 1
    return bits.read(extra) | (1 << extra)


def _copy_match(out: bytearray, distance: int, length: int) -> None:
    start = len(out) - distance
    if start < 0:
        raise ValueError("back-reference before the start")
    if distance >= length:
        out += out[start : start + length]
    else:
        for i in range(length):
            out.append(out[start + i])


def unpack(data: bytes, what: str) -> bytes:
    """The unpacked bytes of an RNC method-1 block; a DataError naming `what` if damaged."""
    if len(data) < HEADER or data[:4] != MAGIC:
        raise DataError(f"{what}: not an RNC method-1 block")
    unpacked_len = int.from_bytes(data[4:8], "big")
    packed_len = int.from_bytes(data[8:12], "big")
    crc_unpacked = int.from_bytes(data[12:14], "big")
    crc_packed = int.from_bytes(data[14:16], "big")
    chunks = data[17]
    body = data[HEADER : HEADER + packed_len]
    if len(body) != packed_len:
        raise DataError(f"{what}: RNC block truncated ({len(body)} of {packed_len} bytes)")
    if crc16(body) != crc_packed:
        raise DataError(f"{what}: RNC packed data fails its CRC (corrupt)")
    try:
        out = _unpack_body(body + b"\0\0\0\0", chunks, unpacked_len)
    except (IndexError, ValueError) as e:
        raise DataError(f"{what}: RNC data is corrupt ({e})") from None
    if len(out) != unpacked_len or crc16(out) != crc_unpacked:
        raise DataError(f"{what}: RNC unpacked data fails its length or CRC check (corrupt)")
    return bytes(out)


def _unpack_body(body: bytes, chunks: int, limit: int) -> bytearray:
    bits = _Bits(body, 0)
    bits.read(2)  # lock and key flags, unused here
    out = bytearray()
    for _ in range(chunks):
        raw, dist, lens = _table(bits), _table(bits), _table(bits)
        steps = bits.read(16)
        for step in range(steps, 0, -1):
            run = _value(bits, raw)
            if run:
                out += bits.take_bytes(run)
            if step > 1:
                distance = _value(bits, dist) + 1
                _copy_match(out, distance, _value(bits, lens) + 2)
            if len(out) > limit:
                raise ValueError("more output than the header announces")
    return out
