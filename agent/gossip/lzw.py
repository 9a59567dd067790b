"""LZW as Go's compress/lzw writes it with LSB bit order and 8-bit literals: the only compression
memberlist (compressMsg, algorithm 0) knows.

No maintained PyPI package speaks this dialect: Unix `compress` (.Z) has no end-of-data code and
pads code-width changes to blocks, and the GIF/TIFF decoders are MSB or bound to image formats.
The stream here: codes start 9 bits wide, 256 is "clear", 257 is "end of data", new table
entries from 258 on, the width grows when the next code to assign reaches a power of two, at
most 12 bits; the writer starts with a clear code and emits another (resetting its table) when
it would assign code 4095; the reader freezes its table when it fills instead.
"""

from __future__ import annotations

_CLEAR = 256
_EOF = 257
_FIRST_WIDTH = 9
_MAX_WIDTH = 12
_WRITER_LIMIT = (1 << _MAX_WIDTH) - 1  # the writer resets before assigning this code


class LzwError(ValueError):
    """The input is not a complete, valid LZW stream, or it expands past the allowed size."""


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self._bits = 0
        self._count = 0

    def write(self, code: int, width: int) -> None:
        self._bits |= code << self._count
        self._count += width
        while self._count >= 8:
            self.out.append(self._bits & 0xFF)
            self._bits >>= 8
            self._count -= 8

    def finish(self) -> bytes:
        if self._count:
            self.out.append(self._bits & 0xFF)
        return bytes(self.out)


def compress(data: bytes) -> bytes:
    """`data` compressed exactly as Go's lzw.NewWriter(w, lzw.LSB, 8) writes it (`next_code`
    is the last code assigned, as the writer counts)."""
    writer = _BitWriter()
    width, next_code, grow_at = _FIRST_WIDTH, _EOF, 1 << _FIRST_WIDTH
    table: dict[tuple[int, int], int] = {}
    writer.write(_CLEAR, width)
    if not data:
        writer.write(_EOF, width)
        return writer.finish()

    def assigned() -> bool:
        """Count one more assigned code; False when the table had to start over."""
        nonlocal width, next_code, grow_at
        if next_code == grow_at:
            width += 1
            grow_at <<= 1
        if next_code == _WRITER_LIMIT:
            writer.write(_CLEAR, width)
            width, next_code, grow_at = _FIRST_WIDTH, _EOF, 1 << _FIRST_WIDTH
            table.clear()
            return False
        return True

    code = data[0]
    for byte in data[1:]:
        known = table.get((code, byte))
        if known is not None:
            code = known
            continue
        writer.write(code, width)
        prefix, code = code, byte
        next_code += 1
        if assigned():
            table[(prefix, byte)] = next_code
    writer.write(code, width)
    next_code += 1
    assigned()
    writer.write(_EOF, width)
    return writer.finish()


def decompress(data: bytes, max_size: int) -> bytes:
    """The bytes `data` encodes; LzwError if it is malformed, ends before the end-of-data code,
    or would expand past `max_size` bytes (a compressed packet must not become a memory bomb)."""
    out = bytearray()
    entries: dict[int, bytes] = {}
    width, next_code, grow_at = _FIRST_WIDTH, _EOF, 1 << _FIRST_WIDTH
    last: bytes | None = None
    bits = count = pos = 0
    size = len(data)
    while True:
        while count < width:
            if pos >= size:
                raise LzwError("LZW stream ends before its end-of-data code")
            bits |= data[pos] << count
            pos += 1
            count += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        count -= width
        if code == _CLEAR:
            width, next_code, grow_at = _FIRST_WIDTH, _EOF, 1 << _FIRST_WIDTH
            last = None
            continue
        if code == _EOF:
            return bytes(out)
        if code < _CLEAR:
            chunk = bytes((code,))
        elif code == next_code and last is not None:
            chunk = last + last[:1]  # the code being defined by this very step
        elif code <= next_code and code in entries:
            chunk = entries[code]
        else:
            raise LzwError(f"invalid LZW code {code}")
        if last is not None:
            entries[next_code] = last + chunk[:1]
        if len(out) + len(chunk) > max_size:
            raise LzwError(f"LZW data expands past {max_size} bytes")
        out += chunk
        last = chunk
        next_code += 1
        if next_code >= grow_at:
            if width == _MAX_WIDTH:
                last = None  # table full: keep decoding with it, assign nothing more
                next_code -= 1
            else:
                width += 1
                grow_at <<= 1
