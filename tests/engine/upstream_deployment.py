"""A deployment built from the upstream definition files (the compatibility target, SPEC intro).

Agents, models and tools are copied unchanged from
``tests/fixtures/upstream-definitions`` (a verbatim copy of ``shared/reference/upstream-definitions``); skills too (``SKILL.md`` and licence only),
then our repository's skill scripts are copied over them (the upstream folders have no
scripts) together with our ``viewports/``. ``application.yml`` defines the providers the
upstream models name (``bailian``, ``siliconflow``, ``babelark``), all pointing at the
fake upstream (plus ``local`` for the built-in ``local-demo`` model), and a small
``_bash_`` whitelist rooted in the deployment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream-definitions"
UPSTREAM_AGENTS = tuple(sorted(path.stem for path in (UPSTREAM / "agents").glob("*.json")))
BASH_COMMANDS = ("ls", "echo", "cat", "head")


def make_upstream_deployment(root: Path, upstream_url: str) -> Path:
    """Build the deployment folder under ``root`` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("agents", "models", "tools", "skills"):
        shutil.copytree(UPSTREAM / folder, root / folder, dirs_exist_ok=True)
    shutil.copytree(REPO / "skills", root / "skills", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("SKILL.md", "__pycache__"))
    shutil.copytree(REPO / "viewports", root / "viewports", dirs_exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    providers = "".join(
        f"    {name}:\n      base-url: {upstream_url}\n      api-key: sk-{name}-test-key\n"
        for name in ("bailian", "siliconflow", "babelark")
    )
    # ``local`` serves the built-in ``local-demo`` model the gateway always installs
    (root / "application.yml").write_text(
        "agent:\n"
        "  auth:\n    enabled: false\n"
        "  providers:\n" + providers + f"    local:\n      base-url: {upstream_url}\n" +
        "  tools:\n"
        "    bash:\n"
        f"      working-directory: {root}\n"
        f"      allowed-paths: {root}\n"
        f"      allowed-commands: {','.join(BASH_COMMANDS)}\n",
        encoding="utf-8",
    )
    return root
