"""The entry point of the one-file executable ``dist/agw-sidecar`` (SPEC §10, "Desktop additions").

The executable is the whole ``agw`` command: ``agw-sidecar sidecar --dir DIR`` is ``agw sidecar --dir
DIR``. Built by ``scripts/build-sidecar`` from ``packaging/agw-sidecar.spec``; see
docs/embedding-sidecar.md.
"""

import os
import sys


def restore_environment() -> None:
    """PyInstaller's bootloader points ``LD_LIBRARY_PATH`` at the unpacked bundle (keeping the caller's
    value in ``LD_LIBRARY_PATH_ORIG``). This process's loader has already read it; processes the
    gateway starts (bubblewrap, bash, python3, MCP servers) must get the caller's value, not the
    bundle's copies of libssl, libstdc++ and the like."""
    if not getattr(sys, "frozen", False):
        return
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


if __name__ == "__main__":
    restore_environment()
    from app.cli import main

    raise SystemExit(main())
