"""A tensor's JSON ``data``, parsed straight into a float32 array without building Python objects.

A JSON parser turns ``[[],[],...]`` (3 bytes per list) into ~100 bytes of objects per list, and
``[0,0,...]`` into 32 bytes per number: 16 MiB of empty lists cost 585 MB before the 400. So the
service never gives a tensor's ``data`` to a JSON parser whole:

1. :func:`cut_data` finds each ``"data": [...]`` array of numbers in the body (C-speed scans: the
   body's strings, then the array's last ``]`` before the next string or ``}``) and replaces it by
   its index, leaving a small JSON header (at most ``MAX_HEADER_BYTES``) for the validating parser;
2. once the header's declared shape is checked against the model and the limits,
   :func:`parse_numbers` checks the array's bracket/comma skeleton against that shape (flat, or
   nested exactly as the shape: anything ragged, empty or extra is refused before any number is
   converted) and converts the numbers, a chunk of ``CHUNK_BYTES`` at a time, into one float32
   array: integers by vectorised digit arithmetic, other numbers by the JSON parser.

Memory per tensor is the body itself, about 6 bytes per value and a few chunk-sized temporaries,
never a tree of Python objects.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pydantic_core


class DataError(ValueError):
    """The request's JSON or its tensor data is refused; the message says what and how to fix it."""


MAX_HEADER_BYTES = 64 * 1024       # the JSON around the tensor data: names, shape, parameters, id
CHUNK_BYTES = 256 * 1024           # the data array is converted this much at a time

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_COLON = re.compile(rb"\s*:\s*")
_NOT_INTEGER = (b".", b"e", b"E", b"-", b"+")    # bytes only a non-integer JSON number holds
_NUMBER_BYTES = b"0123456789.eE+- \t\n\r"
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")


@dataclass(frozen=True)
class DataSpan:
    """Where one ``data`` array lies in the body: ``body[start:end]``, from ``[`` to ``]``."""

    body: bytes | bytearray
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


def cut_data(body: bytes | bytearray, max_header: int = MAX_HEADER_BYTES) -> tuple[bytes, list[DataSpan]]:
    """The JSON body with every numeric ``"data"`` array replaced by its index, and the arrays' spans.

    An array that is not made only of numbers, brackets and commas is left in place: the header
    parser then sees a list where an index should be, and the request is refused.

    Raises:
        DataError: the JSON without its tensor data is larger than ``max_header`` bytes.
    """
    spans: list[DataSpan] = []
    parts: list[bytes] = []
    copied = searched = cut = 0
    while True:
        match = _STRING.search(body, searched)
        if match is None:
            break
        searched = match.end()
        if searched - cut > max_header:
            break                                  # refused below, without scanning the rest
        if searched - match.start() != 6 or body[match.start():searched] != b'"data"':
            continue
        colon = _COLON.match(body, searched)
        if colon is None or b":" not in colon.group() or body[colon.end():colon.end() + 1] != b"[":
            continue
        start = colon.end()
        # In valid JSON a numeric array ends before the next string or object end (memchr-fast finds);
        # whatever else lies inside is refused by parse_numbers' byte checks.
        limit = min(i if i >= 0 else len(body) for i in (body.find(b'"', start), body.find(b"}", start)))
        end = body.rfind(b"]", start, limit) + 1
        if end <= start:
            continue
        parts += [body[copied:start], str(len(spans)).encode()]
        spans.append(DataSpan(body, start, end))
        copied = searched = end
        cut += end - start
    if len(body) - cut > max_header:
        raise DataError(f"the JSON of the request, without its tensor data, is {len(body) - cut} bytes or more; "
                            f"the limit is {max_header}. Send names, shape and parameters only, and the pixels as "
                            "'data' (a list of numbers) or as binary tensor data.")
    if not spans:
        return body, spans
    return b"".join([*parts, body[copied:]]), spans


def parse_numbers(span: DataSpan, shape: list[int], name: str) -> np.ndarray:
    """The numbers of ``span`` as a float32 array of ``shape``, flat or nested exactly as ``shape``.

    The span is read in chunks of about ``CHUNK_BYTES``, cut after a comma: each chunk's brackets
    and commas must continue the expected skeleton, and its numbers go into one preallocated
    float32 array. Beyond that array (4 bytes a value) and the expected skeleton (at most ~2 bytes a
    value), a request costs a few chunk-sized temporaries, whatever the body holds.

    Raises:
        DataError: the structure does not match ``shape`` (ragged, empty lists, missing or extra
            values), a value is not a JSON number, or an integer has more than three digits.
    """
    count = math.prod(shape)
    body, start, end = span.body, span.start, span.end
    opened = body.count(b"[", start, end)
    if opened == 1:                                       # flat
        commas = body.count(b",", start, end)
        if commas != count - 1:
            has = commas + 1 if body[start + 1:end - 1].strip() else 0
            raise DataError(f"input {name!r}: shape {shape} holds {count} values but 'data' has {has}.")
        skeleton = b"[" + b"," * (count - 1) + b"]"
    else:
        if opened != _nested_lists(shape):
            raise _bad_structure(name, shape)
        skeleton = _skeleton(shape)
    out = np.empty(count, np.float32)
    filled = matched = 0
    pos = start
    while pos < end:
        cut = body.find(b",", pos + CHUNK_BYTES, end)
        cut = end if cut < 0 else cut + 1
        chunk = body[pos:cut]
        structure = chunk.translate(None, _NUMBER_BYTES)
        if structure != skeleton[matched:matched + len(structure)]:
            raise _bad_structure(name, shape)
        matched += len(structure)
        text = chunk.translate(_BRACKETS_TO_SPACES)
        del chunk, structure
        parse = _parse_json_numbers if any(c in text for c in _NOT_INTEGER) else _parse_integers
        values = parse(text, name)
        if filled + values.size > count:
            raise DataError(f"input {name!r}: shape {shape} holds {count} values but 'data' has more.")
        out[filled:filled + values.size] = values
        filled += values.size
        pos = cut
    if matched != len(skeleton):
        raise _bad_structure(name, shape)
    if filled != count:
        raise DataError(f"input {name!r}: shape {shape} holds {count} values but 'data' has {filled}.")
    return out.reshape(shape)


def _nested_lists(shape: list[int]) -> int:
    """How many ``[`` an array nested exactly as ``shape`` has."""
    total, lists = 0, 1
    for dim in shape:
        total += lists
        lists *= dim
    return total


def _skeleton(shape: list[int]) -> bytes:
    """Brackets and commas of an array nested exactly as ``shape`` (numbers and spaces removed)."""
    inner = b"," * (shape[-1] - 1)
    for dim in reversed(shape[:-1]):
        inner = b",".join([b"[" + inner + b"]"] * dim)
    return b"[" + inner + b"]"


def _bad_structure(name: str, shape: list[int]) -> DataError:
    return DataError(f"input {name!r}: invalid 'data': it must be a flat (row-major) or nested list of numbers "
                     f"with shape {shape}, with no empty or ragged lists.")


def _parse_integers(text: bytes, name: str) -> np.ndarray:
    """Unsigned integers of at most 3 digits separated by commas/spaces, by digit arithmetic."""
    a = np.frombuffer(text + b",,", np.uint8)      # two separators of padding: starts + 2 stays inside
    # Token boundaries alternate start, end, start, end...: one nonzero pass finds both.
    bounds = np.flatnonzero(np.diff((a >= 48).view(np.int8), prepend=np.int8(0)))
    starts = bounds[0::2]
    lengths = bounds[1::2] - starts
    if starts.size and lengths.max() > 3:
        raise DataError(f"input {name!r}: pixel values must lie in 0-255; 'data' has a value of "
                        f"{int(lengths.max())} digits.")
    if np.any((lengths > 1) & (a[starts] == 48)):
        raise DataError(f"input {name!r}: 'data' has a number with a leading zero, which JSON does not allow.")
    digits = a.astype(np.int16) - 48
    values = digits[starts]
    values = np.where(lengths > 1, values * 10 + digits[starts + 1], values)
    values = np.where(lengths > 2, values * 10 + digits[starts + 2], values)
    return values.astype(np.float32)


def _parse_json_numbers(text: bytes, name: str) -> np.ndarray:
    """Any JSON numbers separated by commas and spaces, by the JSON parser."""
    try:
        values = pydantic_core.from_json(b"[" + text.strip().rstrip(b",") + b"]")
    except ValueError as e:
        raise DataError(f"input {name!r}: invalid 'data': a value is not a JSON number ({e}).") from None
    return np.asarray(values, dtype=np.float32)
