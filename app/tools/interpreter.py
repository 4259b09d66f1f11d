"""The Python that runs skill scripts (``_skill_run_script_``: ``.py`` files and ``pythonCode``).

From a source or pip install it is the gateway's own interpreter (``sys.executable``), and the
sandbox binds its installation read-only (SPEC §14). The one-file desktop executable
(``dist/agw-sidecar``, SPEC §10) is frozen: there ``sys.executable`` is the bundle itself, which
runs ``agw``, not a script, and the bundle has no standard library on disk. So a frozen gateway
runs Python scripts with the system's ``python3`` found on its ``PATH`` (the sandbox binds that
installation instead), and without one it refuses them with an error that says what to install;
``.sh`` scripts and ``_bash_`` need no Python (docs/embedding-sidecar.md, docs/DECISIONS.md).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from app.errors import ToolError


def is_frozen() -> bool:
    """True inside a one-file executable (PyInstaller sets ``sys.frozen``)."""
    return bool(getattr(sys, "frozen", False))


def _system_python() -> Path | None:
    found = shutil.which("python3")
    return Path(found).resolve() if found else None


def python_command() -> str:
    """The interpreter for a Python skill script; ``ToolError`` in a frozen gateway without python3."""
    if not is_frozen():
        return sys.executable
    system = _system_python()
    if system is None:
        raise ToolError(
            "Python skill scripts need python3: this gateway is the one-file executable, which has no "
            "Python of its own for scripts, and no python3 is on its PATH; install Python 3 (or put it on "
            "the PATH the gateway is started with); .sh scripts and _bash_ work without it"
        )
    return str(system)


def python_prefixes() -> list[Path]:
    """The installation folders of that interpreter, bound read-only into the tool sandbox."""
    if not is_frozen():
        return sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.exec_prefix).resolve()})
    system = _system_python()
    return [system.parent.parent] if system is not None else []  # <prefix>/bin/python3.x → <prefix>
