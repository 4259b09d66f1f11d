"""The layering of ``app`` (docs/ARCHITECTURE.md), read from the source with ``ast``.

Every ``import x`` / ``from x import y`` of every module counts, wherever it sits: at the top,
inside a function, under ``if TYPE_CHECKING:``; relative imports are resolved, and so is
``importlib.import_module("…")`` with a literal name. The rules:

* ``app.contract`` is the bottom: it imports nothing from ``app`` but ``app.errors`` and itself;
* ``app.memory`` imports neither ``app.engine`` nor ``app.api``;
* ``app.security`` and ``app.sidecar`` do not import ``app.api`` (the HTTP app is composed with
  the sidecar in ``app.composition``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"


@dataclass(frozen=True)
class Edge:
    """``module`` imports ``target`` (a module, or ``module.name`` for ``from module import name``)."""

    module: str
    target: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.module} → {self.target} ({self.file}:{self.line})"


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@dataclass(frozen=True)
class Rule:
    """Modules inside ``layer`` must not import ``forbidden``; with ``only`` set, nothing of ``app``
    outside ``only`` either."""

    layer: str
    forbidden: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None

    def refuses(self, target: str) -> bool:
        if any(_within(target, name) for name in self.forbidden):
            return True
        return self.only is not None and _within(target, "app") and not any(_within(target, n) for n in self.only)

    def __str__(self) -> str:
        if self.only is not None:
            return f"{self.layer} may import from app only {', '.join(self.only)}"
        return f"{self.layer} must not import {', '.join(self.forbidden)}"


RULES = (
    Rule("app.contract", only=("app.errors", "app.contract")),
    Rule("app.memory", forbidden=("app.engine", "app.api")),
    Rule("app.security", forbidden=("app.api",)),
    Rule("app.sidecar", forbidden=("app.api",)),
)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module of ``from <level dots><name> import …`` written in ``module``."""
    if level == 0:
        assert name is not None
        return name
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 >= len(parts):
        raise ValueError(f"relative import beyond the top-level package in {module}")
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_import_module_call(node: ast.Call) -> bool:
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return called in ("import_module", "__import__")


def imports_of(module: str, source: str, file: str, *, is_package: bool = False) -> Iterator[Edge]:
    """Every import of one module's source, anywhere in it."""
    for node in ast.walk(ast.parse(source, file)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Edge(module, alias.name, file, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                yield Edge(module, base if alias.name == "*" else f"{base}.{alias.name}", file, node.lineno)
        elif isinstance(node, ast.Call) and _is_import_module_call(node) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield Edge(module, first.value, file, node.lineno)


def violations(edges: Iterable[Edge], rules: Iterable[Rule] = RULES) -> list[str]:
    """One line per edge that breaks a rule: ``module → import (file:line)  [rule]``."""
    rules = tuple(rules)
    return [
        f"{edge}  [{rule}]"
        for edge in edges
        for rule in rules
        if _within(edge.module, rule.layer) and rule.refuses(edge.target)
    ]


def check_source(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """The violations of one module given as source text (``<module>`` stands for the file)."""
    return violations(imports_of(module, source, f"<{module}>", is_package=is_package))


def app_import_graph(root: Path = APP) -> list[Edge]:
    """Every import edge of every module under ``root`` (the ``app`` package)."""
    edges: list[Edge] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent)
        is_package = path.name == "__init__.py"
        parts = relative.parent.parts if is_package else relative.with_suffix("").parts
        edges.extend(imports_of(".".join(parts), path.read_text(encoding="utf-8"), str(relative),
                                is_package=is_package))
    return edges


# -- the real tree ------------------------------------------------------------------------


def test_the_layers_of_app_import_only_downwards() -> None:
    problems = violations(app_import_graph())
    assert not problems, "imports that break the layering (docs/ARCHITECTURE.md):\n" + "\n".join(problems)


def test_the_graph_is_read_from_every_layer_the_rules_name() -> None:
    """Guards the guard: a moved package or a scanner reading nothing would make the rules vacuous."""
    edges = app_import_graph()
    modules = {edge.module for edge in edges}
    for rule in RULES:
        assert (ROOT / rule.layer.replace(".", "/") / "__init__.py").is_file(), f"{rule.layer} is gone"
        assert any(_within(module, rule.layer) for module in modules), f"no imports read from {rule.layer}"
    server_imports = {edge.target for edge in edges if edge.module == "app.sidecar.server"}
    assert "app.sidecar.protocol.LineWriter" in server_imports, sorted(server_imports)


# -- the checker itself can fail ---------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "is_package", "expected"),
    [
        pytest.param("app.sidecar.server", "import asyncio\n\ndef f():\n    from ..api.app import create_app\n",
                     False, "app.sidecar.server → app.api.app.create_app (<app.sidecar.server>:4)",
                     id="relative-import-inside-a-function"),
        pytest.param("app.security.jwt_auth",
                     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.api.envelope import fail\n",
                     False, "app.security.jwt_auth → app.api.envelope.fail (<app.security.jwt_auth>:3)",
                     id="type-checking-block"),
        pytest.param("app.memory", "from .. import engine\n", True,
                     "app.memory → app.engine (<app.memory>:1)", id="relative-from-a-package-init"),
        pytest.param("app.memory.store", "import app.engine.runner as runner\n", False,
                     "app.memory.store → app.engine.runner (<app.memory.store>:1)", id="plain-import"),
        pytest.param("app.sidecar.methods", "import importlib\nimportlib.import_module('app.api.auth')\n", False,
                     "app.sidecar.methods → app.api.auth (<app.sidecar.methods>:2)", id="import-module-call"),
        pytest.param("app.contract.events", "from app.config import Settings\n", False,
                     "app.contract.events → app.config.Settings (<app.contract.events>:1)",
                     id="contract-imports-another-app-package"),
        pytest.param("app.contract", "from app import __version__\n", True,
                     "app.contract → app.__version__ (<app.contract>:1)", id="contract-imports-the-app-root"),
    ],
)
def test_the_checker_reports_a_forbidden_import(module: str, source: str, is_package: bool, expected: str) -> None:
    problems = check_source(module, source, is_package=is_package)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected + "  ["), problems


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("app.contract.envelope", "import orjson\nfrom app.errors import GatewayError\nfrom . import events\n"),
        ("app.memory.history", "from app.contract.events import Event\nfrom .lines import LINE_RUN\n"),
        ("app.sidecar.methods", "from app.views import agent_detail\nfrom app.apix import nothing\n"),
        ("app.api.app", "from app.api import catalog_routes\nfrom app.engine.runner import RunManager\n"),
    ],
)
def test_the_checker_allows_downward_imports(module: str, source: str) -> None:
    assert check_source(module, source) == []


def test_a_relative_import_beyond_the_top_is_an_error() -> None:
    with pytest.raises(ValueError, match="beyond the top-level package"):
        check_source("app.memory.store", "from .... import x\n")
