"""The stored name of an uploaded or published file (SPEC §23, §9 "Paths").

A client's file name is a label, never a path: ``safe_name`` keeps one path part made of
letters and digits of any script, ``.``, ``-`` and ``_``, at most ``MAX_NAME_BYTES`` UTF-8
bytes with its extension kept. What it removes and why:

* folders of any spelling (``../``, ``/etc/``, ``C:\\``, the full-width solidus that NFKC
  turns into ``/``): only the last part counts;
* every control, format and unassigned character (NUL, newlines, the bidi overrides that make
  ``exe.txt`` look like ``txt.exe``, zero-width joiners) and every other character: ``_``;
* leading dots and dashes (no hidden files, no ``..``, nothing ``cat`` reads as an option).

A name with nothing left becomes ``fallback``. ``numbered`` gives the n-th alternative
(``report-2.csv``) when a name is taken.
"""

from __future__ import annotations

import re
import unicodedata

#: longest stored name, bytes of UTF-8 (well under NAME_MAX; room for ``-NN``)
MAX_NAME_BYTES = 120
#: longest extension kept when a long name is cut
MAX_EXTENSION_BYTES = 16

_OTHER = re.compile(r"[^\w.\-]+")
_REPEATS = re.compile(r"_{2,}")
_SEPARATORS = re.compile(r"[/\\]")


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def _split(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension.encode("utf-8")) > MAX_EXTENSION_BYTES:
        return name, ""
    return stem, "." + extension


def safe_name(raw: str, fallback: str = "file") -> str:
    """One safe path part for the client-supplied ``raw`` (see the module docstring)."""
    text = unicodedata.normalize("NFKC", raw if isinstance(raw, str) else "")
    text = _SEPARATORS.split(text)[-1]
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else "_" for ch in text)
    text = _REPEATS.sub("_", _OTHER.sub("_", text)).lstrip(".-_").rstrip(". _")
    if not text:
        return fallback
    stem, extension = _split(text)
    stem = _cut(stem, MAX_NAME_BYTES - len(extension.encode("utf-8"))).rstrip(". _") or fallback
    return stem + extension


def numbered(name: str, n: int) -> str:
    """The ``n``-th alternative of ``name`` (``n`` ≥ 2): ``report.csv`` → ``report-2.csv``."""
    stem, extension = _split(name)
    suffix = f"-{n}"
    return _cut(stem, MAX_NAME_BYTES - len((suffix + extension).encode("utf-8"))) + suffix + extension


__all__ = ["MAX_NAME_BYTES", "numbered", "safe_name"]
