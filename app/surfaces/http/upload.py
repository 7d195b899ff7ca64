"""An uploaded archive written to a file as it streams in: a raw ``application/gzip`` body,
or the ``archive`` field of a ``multipart/form-data`` body (parsed incrementally by
python-multipart, so no part is ever held in memory or spooled twice)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.core.errors import InvalidInput

FIELD = "archive"
"""The multipart field that carries the archive."""
RAW_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/octet-stream"})
"""Media types of a body that is the archive itself."""
MULTIPART = "multipart/form-data"
UPLOAD_TYPES = RAW_TYPES | {MULTIPART}


def save_upload(chunks: Iterable[bytes], content_type: str | None, out: BinaryIO) -> int:
    """Write the archive of a request body to ``out``; the number of bytes written.
    ``InvalidInput`` when a multipart body is malformed or has no ``archive`` file."""
    media, options = parse_options_header(content_type or "")
    kind = media.decode("latin-1").lower()
    if kind in RAW_TYPES:
        written = 0
        for chunk in chunks:
            written += out.write(chunk)
        return written
    if kind != MULTIPART:
        raise InvalidInput(
            f"content type {kind!r}: send multipart/form-data (field {FIELD!r}) or "
            "application/gzip",
            argument="content-type",
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart body without a boundary", argument=FIELD)
    return _save_multipart(chunks, boundary, out)


def _save_multipart(chunks: Iterable[bytes], boundary: bytes, out: BinaryIO) -> int:
    state = _Parts(out)
    parser = MultipartParser(
        boundary,
        {
            "on_header_field": state.header_field,
            "on_header_value": state.header_value,
            "on_header_end": state.header_end,
            "on_headers_finished": state.headers_finished,
            "on_part_data": state.part_data,
            "on_part_end": state.part_end,
            "on_end": state.end,
        },
    )
    try:
        for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise InvalidInput(f"malformed multipart body: {exc}", argument=FIELD) from None
    if not state.ended:
        raise InvalidInput("truncated multipart body", argument=FIELD)
    if not state.found:
        raise InvalidInput(f"no {FIELD!r} file in the multipart body", argument=FIELD)
    return state.written


class _Parts:
    """The state of the multipart callbacks: which part is the archive, what was written."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.field = bytearray()
        self.value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.writing = False
        self.found = False
        self.ended = False
        self.written = 0

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        self.headers[bytes(self.field).lower()] = bytes(self.value)
        self.field.clear()
        self.value.clear()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if options.get(b"name") == FIELD.encode():
            if self.found:
                raise InvalidInput(f"more than one {FIELD!r} file", argument=FIELD)
            self.found = self.writing = True
        self.headers = {}

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.writing:
            self.written += self.out.write(data[start:end])

    def part_end(self) -> None:
        self.writing = False

    def end(self) -> None:
        self.ended = True


__all__ = ["FIELD", "MULTIPART", "RAW_TYPES", "UPLOAD_TYPES", "save_upload"]
