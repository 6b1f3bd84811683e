"""Decoding a text table (CSV, TSV, JSONL, JSON) ourselves, and saying what went wrong when it fails: the byte
offset and line of the first bad byte, the encodings the file does decode as, and a file that mixes UTF-8 lines
into another encoding, which no one encoding reads right (also when the declared one decodes it without error)."""

from __future__ import annotations

import codecs
from pathlib import Path

from skewtune.core.errors import SkewtuneError
from skewtune.data.settings import Settings

# Tried, in this order, to suggest an encoding when the declared one fails; latin-1 decodes any bytes.
_ENCODING_GUESSES = ("utf-8", "cp1252", "gb18030", "latin-1")

# How many line numbers an encoding message lists, and how many characters of a line it shows each side.
_LISTED_LINES = 5
_SHOWN_CHARS = 12


def decode_file(path: Path, encoding: str, settings: Settings) -> tuple[str, dict]:
    """Decode the whole file ourselves, so that a bad byte is reported with its offset in the file; with what
    the reading records of a file that mixes UTF-8 lines into another encoding (see _utf8_in_legacy)."""
    raw = path.read_bytes()
    # A UTF-8 BOM would otherwise stick to the first column name (or the first label of a headerless
    # file), also when the declared encoding (latin-1, cp1252) would read it as three letters.
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = exc.start + skip
        line = raw.count(b"\n", 0, offset) + 1
        bad = raw[offset : offset + 4]
        lines = raw[skip:].split(b"\n")
        utf8, other = _non_ascii_lines(lines)
        if utf8 and other:  # any one encoding garbles some of the lines: those lines need converting
            raise SkewtuneError(
                f"{path}: byte offset {offset} (line {line}) is not valid {encoding}: {bad!r} ({exc.reason}); "
                + _mixed_advice(lines, utf8, other, settings)
            ) from None
        guesses = (["utf-16"] if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else []) + list(_ENCODING_GUESSES)
        fits = [name for name in guesses if _decodes(raw, name)]  # never empty: latin-1 decodes anything
        raise SkewtuneError(
            f"{path}: byte offset {offset} (line {line}) is not valid {encoding}: {bad!r} ({exc.reason}); "
            f"set {settings.encoding} to the file's real encoding: it decodes as {fits[0]}"
            + (f" (also {', '.join(fits[1:])}; check which shows the text correctly)" if len(fits) > 1 else "")
        ) from None
    text = text.removeprefix("\ufeff")  # the BOM of encodings such as utf-16
    if not text.strip():
        raise SkewtuneError(f"{path}: the file holds only whitespace; export the table again")
    return text, _utf8_in_legacy(raw[skip:], encoding)


def _non_ascii_lines(lines: list[bytes]) -> tuple[list[int], list[int]]:
    """The 1-based numbers of the `lines` with non-ASCII bytes that are valid UTF-8, and of those that are not."""
    utf8, other = [], []
    for number, line in enumerate(lines, start=1):
        if not line.isascii():
            (utf8 if _decodes(line, "utf-8") else other).append(number)
    return utf8, other


def _around_non_ascii(text: str) -> str:
    """The part of a line around its first non-ASCII character."""
    at = next(i for i, char in enumerate(text) if not char.isascii())
    return text[max(0, at - _SHOWN_CHARS) : at + _SHOWN_CHARS].strip()


def _garbled(lines: list[bytes], number: int, encoding: str) -> str:
    """The UTF-8 line `number` as `encoding` reads it, beside what it says: line 3: 'cafÃ©' for 'café'."""
    part = _around_non_ascii(lines[number - 1].decode("utf-8"))
    return f"line {number}: {part.encode('utf-8').decode(encoding, errors='replace')!r} for {part!r}"


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:_LISTED_LINES])) + (", ..." if len(numbers) > _LISTED_LINES else "")


def _mixed_advice(lines: list[bytes], utf8: list[int], other: list[int], settings: Settings) -> str:
    """What to do with a file whose non-ASCII lines are partly UTF-8 and partly not: reading it all in the
    legacy encoding that fits the other lines would garble the UTF-8 ones, so those other lines need converting."""
    legacy = next(name for name in _ENCODING_GUESSES[1:] if all(_decodes(lines[n - 1], name) for n in other))
    shown = _around_non_ascii(lines[other[0] - 1].decode(legacy, errors="replace"))
    return (
        f"the file mixes encodings: {len(other)} lines are not UTF-8 (lines {_listed(other)}; as {legacy}, line {other[0]} "
        f"reads {shown!r}) but {len(utf8)} lines are UTF-8 with non-ASCII characters, which {settings.encoding}: {legacy} would garble "
        f"({_garbled(lines, utf8[0], legacy)}). Convert those {len(other)} lines to UTF-8 and keep {settings.encoding}: utf-8"
    )


def _utf8_in_legacy(raw: bytes, encoding: str) -> dict:
    """When `raw` was decoded with an encoding other than a UTF but some of its lines are valid UTF-8 with
    non-ASCII characters, which then read garbled ('cafÃ©'): their count, the count of the other non-ASCII
    lines and an example, for the reading and the printed warning. In a file really written in a legacy
    encoding such lines are all but impossible: 'é' there is one byte, which UTF-8 refuses on its own."""
    if raw.isascii() or codecs.lookup(encoding).name.startswith("utf"):
        return {}
    lines = raw.split(b"\n")
    utf8, other = _non_ascii_lines(lines)
    if not utf8:
        return {}
    return {
        "encoding": encoding,
        "utf8_lines": len(utf8),
        "other_non_ascii_lines": len(other),
        "utf8_example": _garbled(lines, utf8[0], encoding),
        "other_lines": _listed(other),
    }


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True
