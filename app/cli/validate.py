"""``agw validate [DIR]`` (SPEC §22): check a deployment folder without starting it.

Loads the configuration (a malformed file is reported with its file and line), lists unknown
configuration keys, checks that auth can be set up (SPEC §9 fail closed), and reads every
definition folder with the catalog loader the gateway uses (``build_catalog``, which never
raises). The built-in model files are seen as ``agw serve`` sees them (it copies them into the
model folder at start) without writing anything into the folder. Exit 1 when anything is
rejected, 0 otherwise.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.catalog.definitions import Catalog
from app.catalog.loader import build_catalog
from app.catalog.manager import BUILTIN_MODELS_DIR, sync_builtin_models
from app.cli.options import DirOption, LogLevelOption, deployment_dir, effective_log_level, fail, out_console
from app.config import Settings, load_settings, unknown_keys_in_files
from app.errors import ConfigError
from app.security.jwt_auth import build_verifier
from app.tools import builtin_tool_names

_LEADING_POSITION = re.compile(r"line (\d+)(?:, column (\d+))?:\s*", re.DOTALL)
#: ``<file>: line N, column M: problem`` (``read_yaml``'s message for a malformed file)
_FILE_POSITION = re.compile(r"(?P<file>[^\n]+?\.ya?ml): (?P<rest>line \d+.*)", re.DOTALL)


@dataclass(frozen=True)
class Finding:
    """One problem: where it is, what kind of file, why."""

    file: str
    kind: str
    reason: str

    def location_and_reason(self) -> tuple[str, str]:
        """``file:line:column`` when the reason starts with ``line N, column M:``, and the rest."""
        match = _LEADING_POSITION.match(self.reason)
        if not match:
            return self.file, self.reason
        where = ":".join(part for part in (self.file, match.group(1), match.group(2)) if part)
        return where, self.reason[match.end():]


def _display(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def _config_finding(error: ConfigError, base: Path) -> Finding:
    match = _FILE_POSITION.fullmatch(error.message)
    if match:
        return Finding(_display(Path(match.group("file")), base), "config", match.group("rest"))
    return Finding("configuration", "config", error.message)


def _builtin_models_in_place(models_dir: Path, source: Path = BUILTIN_MODELS_DIR) -> bool:
    for file in source.glob("*.json"):
        target = models_dir / file.name
        if not target.is_file() or target.read_bytes() != file.read_bytes():
            return False
    return True


@contextmanager
def served_view(settings: Settings) -> Iterator[tuple[Settings, Path | None]]:
    """``settings`` whose model folder holds the built-in models, as ``agw serve`` would see it.

    When the folder lacks them, a temporary copy of its model files plus the built-ins is used
    (yielded as the second item, so rejections can be mapped back); the folder is never written.
    """
    if _builtin_models_in_place(settings.models_dir):
        yield settings, None
        return
    with tempfile.TemporaryDirectory(prefix="agw-validate-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        models = models.resolve()
        if settings.models_dir.is_dir():
            for file in settings.models_dir.iterdir():
                if file.is_file() and not file.name.startswith("."):
                    shutil.copyfile(file, models / file.name)
        sync_builtin_models(models)
        model = settings.agent.model.model_copy(update={"external_dir": str(models)})
        agent = settings.agent.model_copy(update={"model": model})
        yield settings.model_copy(update={"agent": agent}), models


def _rejections(settings: Settings) -> tuple[Catalog, list[Finding]]:
    findings: list[Finding] = []
    with served_view(settings) as (view, temporary_models):
        catalog = build_catalog(view, builtin_tool_names())
        for rejection in catalog.rejections:
            file = rejection.file
            if temporary_models is not None and file.startswith(str(temporary_models)):
                file = _display(settings.models_dir / Path(file).relative_to(temporary_models), settings.base_dir)
            findings.append(Finding(file, rejection.kind, rejection.reason))
    return catalog, findings


def _print_finding(console: Console, finding: Finding, style: str) -> None:
    where, reason = finding.location_and_reason()
    line = Text()
    line.append(where, style="bold")
    line.append(": ")
    line.append(finding.kind, style=style)
    line.append(f": {reason}")
    console.print(line)


def _summary(catalog: Catalog | None, findings: list[Finding], unknown: int) -> Table:
    table = Table(title="agw validate", title_justify="left")
    table.add_column("what")
    table.add_column("loaded", justify="right")
    table.add_column("rejected", justify="right")
    rejected = {kind: sum(1 for f in findings if f.kind == kind) for kind in {f.kind for f in findings}}
    table.add_row("config", "", str(rejected.get("config", 0)))
    table.add_row("unknown config keys", "", str(unknown))
    if catalog is not None:
        for kind, loaded in (("model", catalog.models), ("tool", catalog.tools), ("skill", catalog.skills),
                             ("viewport", catalog.viewports), ("agent", catalog.agents)):
            table.add_row(f"{kind}s", str(len(loaded)), str(rejected.get(kind, 0)))
    return table


def validate(
    ctx: typer.Context,
    folder: Annotated[Path | None, typer.Argument(metavar="DIR", help="Deployment folder (default: --dir, else .).",
                                                  show_default=False)] = None,
    dir: DirOption = None,
    log_level: LogLevelOption = None,
    strict: Annotated[bool, typer.Option("--strict", help="Also fail on unknown configuration keys.")] = False,
) -> int:
    """Check a deployment folder: configuration and every definition file (exit 1 on any rejection)."""
    effective_log_level(ctx, default="ERROR")  # the findings are printed below, not logged twice
    base = deployment_dir(ctx, folder)
    if not base.is_dir():
        raise fail(f"no such folder: {base}", 2)
    console = out_console()
    findings: list[Finding] = []
    catalog: Catalog | None = None
    unknown: list[tuple[Path, str, str | None]] = []
    try:
        settings = load_settings(base)
    except ConfigError as exc:
        findings.append(_config_finding(exc, base))
    else:
        unknown = unknown_keys_in_files(settings.base_dir)
        try:
            build_verifier(settings)
        except ConfigError as exc:
            findings.append(_config_finding(exc, base))
        catalog, rejected = _rejections(settings)
        findings.extend(rejected)
    for file, key, suggestion in unknown:
        hint = f"did you mean {suggestion!r}?" if suggestion else "no similar key"
        line = Text()
        line.append(_display(file, base), style="bold")
        line.append(": ")
        line.append("unknown key", style="yellow")
        line.append(f": {key!r} ({hint})")
        console.print(line)
    for finding in findings:
        _print_finding(console, finding, "red")
    console.print(_summary(catalog, findings, len(unknown)))
    failed = bool(findings) or (strict and bool(unknown))
    verdict = Text("FAILED" if failed else "OK", style="bold red" if failed else "bold green")
    verdict.append(f": {len(findings)} rejected, {len(unknown)} unknown configuration keys", style="")
    console.print(verdict)
    return 1 if failed else 0
