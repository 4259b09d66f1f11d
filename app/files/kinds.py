"""What a file is: its MIME type and reference ``type`` (``file`` or ``image``), SPEC §23.

The content decides, not the label: ``classify`` looks at the first bytes for the raster
image formats a vision model takes (PNG, JPEG, GIF, WebP). A file is an ``image`` only when
its bytes are one; a file whose name or declared type claims one of those formats while its
bytes are not is refused (``UnsupportedMediaType``: a mislabelled file never reaches a model
as an image). Anything else is a ``file`` typed by its extension, else by the declared type,
else ``application/octet-stream``.

``check_allowed`` applies ``agent.upload.allowed-types``: MIME types (``text/csv``), families
(``image/*``) and extensions (``.csv``); an empty list allows everything.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Sequence

from app.errors import UnsupportedMediaType

#: bytes of a file's start that ``classify`` needs
HEAD_BYTES = 16
#: the image formats recognised by their bytes, which vision models accept
RASTER_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
OCTET_STREAM = "application/octet-stream"

_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+\-]{0,126}$")


def sniff_image(head: bytes) -> str | None:
    """The raster image type the first bytes announce, or ``None``."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _clean_declared(declared: str | None) -> str | None:
    """A client's ``Content-Type`` without parameters, when it is a plausible MIME type."""
    if not declared:
        return None
    value = declared.split(";", 1)[0].strip().lower()
    return value if _MIME.fullmatch(value) else None


def classify(name: str, declared: str | None, head: bytes) -> tuple[str, str]:
    """``(type, mimeType)`` of a file named ``name`` whose content starts with ``head``."""
    sniffed = sniff_image(head)
    if sniffed is not None:
        return "image", sniffed
    by_name = mimetypes.guess_type(name, strict=False)[0]
    claimed = _clean_declared(declared)
    for label, value in (("its name", by_name), ("its declared type", claimed)):
        if value in RASTER_TYPES:
            raise UnsupportedMediaType(f"the file is not a {value} image although {label} says so")
    return "file", by_name or claimed or OCTET_STREAM


def check_allowed(name: str, mime_type: str, allowed: Sequence[str]) -> None:
    """Raise ``UnsupportedMediaType`` unless ``agent.upload.allowed-types`` accepts the file."""
    if not allowed:
        return
    lowered = name.lower()
    family = mime_type.split("/", 1)[0] + "/*"
    for entry in (item.strip().lower() for item in allowed):
        if entry.startswith(".") and lowered.endswith(entry):
            return
        if entry in (mime_type, family):
            return
    raise UnsupportedMediaType(
        f"files of type {mime_type} are not accepted here (agent.upload.allowed-types: {', '.join(allowed)})")


__all__ = ["HEAD_BYTES", "OCTET_STREAM", "RASTER_TYPES", "check_allowed", "classify", "sniff_image"]
