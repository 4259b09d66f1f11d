"""``agw init DIR`` (SPEC §22): write a ready deployment folder.

The folder gets the repository's demo deployment: ``application.yml`` (auth off, the built-in
``local`` provider), the demo agents, tools, skills and viewports of the checkout ``agw`` runs
from, the built-in model files shipped in the package (``app/builtin/models``), and a short
README. ``agw validate DIR`` passes on it and ``agw serve --dir DIR`` streams every demo agent
with no API key.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from app.catalog.manager import BUILTIN_MODELS_DIR
from app.cli.options import LogLevelOption, effective_log_level, fail, out_console

#: the demo definition folders copied from the checkout
DEMO_FOLDERS = ("agents", "tools", "skills", "viewports")

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")

README = """\
# Agent Gateway deployment

Written by `agw init`. Everything here is read by the gateway and hot-reloaded:

| path | what |
|---|---|
| `application.yml` | configuration (every key: docs/configuration.md of the gateway) |
| `agents/<key>.json` | agents |
| `models/<key>.json` | models; `local-demo` is the built-in scripted model (no API key) |
| `tools/` | tool definitions (`*.backend`, `*.frontend`, `*.action`) |
| `skills/<id>/SKILL.md` | skills |
| `viewports/` | viewports of frontend tools |

Chats are written to `chats/`, the gateway's own state to `data/.agw/`.

```bash
agw validate .                 # check the configuration and every definition file
agw serve --dir .              # http://127.0.0.1:8080/
agw chat demoPlain --dir .     # talk to an agent in the terminal
```

To use a real model, add a provider under `agent.providers` in `application.yml` (its key from
the environment, e.g. `api-key: ${OPENAI_API_KEY:}`) and point a model file at it. Before
exposing the gateway, turn `agent.auth.enabled` on and configure `jwks-uri` or `local-public-key`.
"""


def checkout_root() -> Path:
    """The source checkout ``agw`` runs from (it holds the demo deployment), or ``FileNotFoundError``."""
    root = Path(__file__).resolve().parents[2]
    missing = [name for name in ("application.yml", *DEMO_FOLDERS) if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"the demo deployment is not installed with this copy of agw ({root} has no {', '.join(missing)}); "
            "run agw from a source checkout (pip install -e .)"
        )
    return root


def write_deployment(target: Path, source: Path) -> list[str]:
    """Copy the demo deployment from ``source`` into ``target``; returns what was written."""
    target.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    shutil.copyfile(source / "application.yml", target / "application.yml")
    written.append("application.yml")
    for folder in DEMO_FOLDERS:
        shutil.copytree(source / folder, target / folder, ignore=_IGNORED, dirs_exist_ok=True)
        written.append(f"{folder}/")
    models = target / "models"
    models.mkdir(exist_ok=True)
    for file in sorted(BUILTIN_MODELS_DIR.glob("*.json")):
        shutil.copyfile(file, models / file.name)
    written.append("models/")
    (target / "README.md").write_text(README, encoding="utf-8")
    written.append("README.md")
    return written


def init(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The folder to write (created when missing).")],
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder, overwriting.")] = False,
    log_level: LogLevelOption = None,
) -> int:
    """Write a ready deployment folder: configuration, the demo agents and a README."""
    effective_log_level(ctx)
    if folder.exists() and not folder.is_dir():
        raise fail(f"{folder} exists and is not a folder", 1)
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise fail(f"{folder} is not empty; use --force to write into it anyway", 1)
    try:
        source = checkout_root()
    except FileNotFoundError as exc:
        raise fail(str(exc), 1) from None
    written = write_deployment(folder, source)
    console = out_console()
    console.print(Text(f"wrote a deployment to {folder}:", style="bold"))
    for item in written:
        console.print(f"  {item}")
    console.print("next:")
    console.print(f"  agw validate {folder}")
    console.print(f"  agw serve --dir {folder}")
    console.print(f"  agw chat demoPlain --dir {folder}")
    return 0
