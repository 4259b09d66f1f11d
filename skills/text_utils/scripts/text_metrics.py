#!/usr/bin/env python3
"""text_utils: deterministic text metrics (see ../SKILL.md).

    text_metrics.py --text TEXT [--normalize-space]

stdout: {"ok":true,"chars":11,"words":2,"lines":1,"normalizedText":"hello world"}
With ``--normalize-space`` internal whitespace runs collapse to one space and the ends
are trimmed; the metrics describe ``normalizedText`` (the text itself without the flag).
``words`` are whitespace-separated; ``lines`` counts lines (0 for empty text).
bad input: {"ok":false,"error":"…"} and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn


def fail(message: str) -> NoReturn:
    print(json.dumps({"ok": False, "error": message}, ensure_ascii=False, separators=(",", ":")))
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(message)


def main(argv: list[str]) -> int:
    parser = Parser(prog="text_metrics.py", description="Deterministic text metrics.")
    parser.add_argument("--text", required=True)
    parser.add_argument("--normalize-space", action="store_true")
    args = parser.parse_args(argv)
    text = " ".join(args.text.split()) if args.normalize_space else args.text
    out = {
        "ok": True,
        "chars": len(text),
        "words": len(text.split()),
        "lines": len(text.splitlines()),
        "normalizedText": text,
    }
    print(json.dumps(out, ensure_ascii=False, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
