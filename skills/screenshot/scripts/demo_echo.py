#!/usr/bin/env python3
"""screenshot: a smoke-test script (see ../SKILL.md) — prints a simple message.

    demo_echo.py [--message TEXT] [ARGS…]

stdout: {"ok":true,"skill":"screenshot","message":"…","args":[…]}
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    message = "screenshot skill is available (demo echo)"
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--message" and i + 1 < len(argv):
            message = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    out = {"ok": True, "skill": "screenshot", "message": message, "args": rest}
    print(json.dumps(out, ensure_ascii=False, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
