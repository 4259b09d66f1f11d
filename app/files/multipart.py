"""``multipart/form-data`` of ``POST /api/ap/upload`` read as a stream (SPEC §23).

python-multipart's streaming ``MultipartParser`` (the parser starlette uses) is fed the body
chunk by chunk as it arrives; the ``file`` part goes straight into an ``Incoming`` — never
into memory or a spool in ``/tmp`` — so the size limit stops an oversize upload at the
first byte too many. Parts:

* ``file`` — the file (exactly one); its ``filename`` and ``Content-Type`` are kept as the
  client's *claims* (the name is sanitised and the type checked later);
* ``chatId``, ``requestId`` — short text fields (UTF-8, at most ``MAX_FIELD_BYTES``);
* any other part is read and dropped (at most ``MAX_PARTS`` parts in all).

A body that is not ``multipart/form-data`` with a boundary, is malformed, or ends before its
closing boundary (an interrupted upload) is a ``RequestError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from app.files.store import Incoming

FILE_FIELD = "file"
TEXT_FIELDS = ("chatId", "requestId")
MAX_FIELD_BYTES = 1024
MAX_PARTS = 16
#: room for the part headers and text fields around the file
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass(slots=True)
class UploadForm:
    """What the form said besides the file's bytes (those went to the ``Incoming``)."""

    fields: dict[str, str] = field(default_factory=dict)
    has_file: bool = False
    filename: str | None = None
    content_type: str | None = None


@dataclass(slots=True)
class _Part:
    name: str | None = None
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


class _Reader:
    """The parser callbacks: they collect the file's bytes of one chunk for the caller to write."""

    def __init__(self, form: UploadForm) -> None:
        self.form = form
        self.parts = 0
        self.ended = False
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.part = _Part()
        self.file_data: list[bytes] = []

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end, "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise RequestError(f"too many form parts (at most {MAX_PARTS})")
        self.headers = {}
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).strip().lower()] = bytes(self.header_value).strip()
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        self.part.name = name
        if name != FILE_FIELD:
            return
        if self.form.has_file:
            raise RequestError("one file per upload: the form has more than one 'file' part")
        self.part.is_file = True
        self.form.has_file = True
        filename = options.get(b"filename")
        self.form.filename = filename.decode("utf-8", errors="replace") if filename is not None else None
        declared = self.headers.get(b"content-type")
        self.form.content_type = declared.decode("latin-1") if declared else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.is_file:
            self.file_data.append(bytes(data[start:end]))
        elif self.part.name in TEXT_FIELDS:
            self.part.value += data[start:end]
            if len(self.part.value) > MAX_FIELD_BYTES:
                raise RequestError(f"form field {self.part.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        name = self.part.name
        if name in TEXT_FIELDS and not self.part.is_file:
            try:
                self.form.fields[name] = self.part.value.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(f"form field {name!r} is not UTF-8 text") from None

    def on_end(self) -> None:
        self.ended = True


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; 415 / 400 otherwise."""
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise UnsupportedMediaType("an upload is a multipart/form-data body with a 'file' part")
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise RequestError("the multipart/form-data content type has no usable boundary")
    return boundary


async def read_upload_form(chunks: AsyncIterator[bytes], content_type: str | None, incoming: Incoming) -> UploadForm:
    """Parse the body ``chunks`` (see the module docstring), the file into ``incoming``."""
    form = UploadForm()
    reader = _Reader(form)
    try:
        parser = MultipartParser(boundary_of(content_type), reader.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:
        raise RequestError(f"malformed multipart/form-data: {exc}") from None
    max_body = incoming.max_bytes + FORM_OVERHEAD_BYTES
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_body:
            raise PayloadTooLarge(f"the upload is larger than the limit of {incoming.max_bytes} bytes "
                                  "(agent.upload.max-bytes)")
        if reader.ended or not chunk:
            continue  # the epilogue after the closing boundary is ignored
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise RequestError(f"malformed multipart/form-data: {exc}") from None
        if reader.file_data:
            data, reader.file_data = b"".join(reader.file_data), []
            await asyncio.to_thread(incoming.write, data)
    if not reader.ended:
        raise RequestError("the upload ended before its closing boundary (interrupted?)")
    if not form.has_file:
        raise RequestError("the upload has no 'file' part")
    return form


__all__ = ["FILE_FIELD", "FORM_OVERHEAD_BYTES", "UploadForm", "boundary_of", "read_upload_form"]
