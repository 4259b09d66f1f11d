"""Which of this process's file descriptors point at a path: what the kernel says it holds
(``/proc/self/fd``), for tests that a file is kept open, or closed, when it should be."""

from __future__ import annotations

import os
from pathlib import Path


def open_descriptors(path: Path) -> list[int]:
    """This process's descriptors that point at ``path``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                found.append(int(name))
        except OSError:
            continue  # closed between listdir and readlink
    return found
