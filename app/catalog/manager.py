"""The live catalog and its hot reload (SPEC §3, "all hot-reloaded").

``CatalogManager.snapshot`` is one immutable ``Catalog``; a reload builds a new one
and swaps it in by assigning one attribute, so readers never see a half-built
catalog and a run in progress keeps the ``AgentDefinition`` it started with.

Two tasks keep it fresh after ``start()``:

* a watchfiles watcher over every existing definition folder (agents, models, tools,
  skills, viewports) with a short debounce, so a change is live well within a second
  (``WATCH_STEP_MS``: how often the watcher thread looks at what changed);
* a fallback rescan every ``min(refresh-interval-ms)`` that compares a cheap
  fingerprint (paths, mtimes, sizes) and rebuilds only when it changed. It also
  notices a folder that appeared or vanished and restarts the watcher over the new
  set of folders.

A full rebuild on every change keeps the cross-references right for free: a changed
model file reloads the agents that use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from watchfiles import DefaultFilter, awatch

from app.catalog.definitions import Catalog
from app.catalog.loader import build_catalog
from app.catalog.mcp import McpTools
from app.config import Settings

logger = logging.getLogger(__name__)

#: how often a watchfiles thread wakes to look at the changes notify collected (and takes the
#: GIL to check for signals and its stop event). A change is delivered once one step sees no
#: further change, so 2–3 steps after it: about 0.25 s. 20 ms woke an idle gateway 50 times a
#: second (a desktop app's battery) and interrupted a busy event loop as often.
WATCH_STEP_MS = 100

#: the model files shipped inside the package (SPEC §3.1)
BUILTIN_MODELS_DIR = Path(__file__).resolve().parent.parent / "builtin" / "models"

Fingerprint = frozenset[tuple[str, int, int]]


def definition_folders(settings: Settings) -> tuple[Path, ...]:
    """Every folder the catalog reads, in load order."""
    return (
        settings.models_dir,
        settings.tools_dir,
        settings.skills_dir,
        settings.viewports_dir,
        settings.agents_dir,
    )


def rescan_interval_s(settings: Settings) -> float:
    """The smallest configured ``refresh-interval-ms``, in seconds (at least 0.05 s)."""
    agent = settings.agent
    smallest = min(
        agent.catalog.refresh_interval_ms,
        agent.model.refresh_interval_ms,
        agent.viewport.refresh_interval_ms,
        agent.capability.refresh_interval_ms,
        agent.skill.refresh_interval_ms,
    )
    return max(smallest, 50) / 1000


def fingerprint(folders: Iterable[Path]) -> Fingerprint:
    """Paths, mtimes and sizes of everything under ``folders`` (folders themselves included)."""
    entries: set[tuple[str, int, int]] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        entries.add((str(folder), -1, -1))
        for root, dirs, files in os.walk(folder, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                path = os.path.join(root, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                entries.add((path, stat.st_mtime_ns, stat.st_size))
    return frozenset(entries)


def sync_builtin_models(target: Path, source: Path = BUILTIN_MODELS_DIR) -> list[Path]:
    """Copy every built-in model file into ``target`` (created if needed), overwriting
    same-named files whose content differs; other files in ``target`` are kept.
    Returns the files written."""
    written: list[Path] = []
    if not source.is_dir():
        return written
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.glob("*.json")):
        destination = target / file.name
        content = file.read_bytes()
        if destination.is_file() and destination.read_bytes() == content:
            continue
        shutil.copyfile(file, destination)
        written.append(destination)
        logger.info("installed built-in model file %s", destination)
    return written


class CatalogManager:
    """Owns the live ``Catalog`` and keeps it in step with the definition folders (SPEC §3).

    ``snapshot`` is safe to read from any task or thread at any time. ``reload()`` is a
    synchronous full rebuild (version + 1). ``start()`` installs the built-in model
    files, loads, and starts the watcher and the fallback rescan; ``stop()`` cancels them.
    """

    def __init__(
        self,
        settings: Settings,
        builtin_tools: Iterable[str],
        *,
        builtin_models_dir: Path = BUILTIN_MODELS_DIR,
        debounce_ms: int = 50,
        mcp_tools: Callable[[], Mapping[str, McpTools]] | None = None,
    ) -> None:
        self.settings = settings
        self.builtin_tools: frozenset[str] = frozenset(builtin_tools)
        self._builtin_models_dir = builtin_models_dir
        self._debounce_ms = debounce_ms
        #: SPEC §18: the MCP servers' tools now (``McpManager.catalog_tools``), read at every build
        self._mcp_tools = mcp_tools
        self._snapshot = Catalog()
        self._fingerprint: Fingerprint = frozenset()
        self._reload_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._restart_watch = asyncio.Event()
        self._watched: tuple[Path, ...] = ()

    @property
    def snapshot(self) -> Catalog:
        """The current catalog. Hold on to the object you read; it never changes."""
        return self._snapshot

    @property
    def folders(self) -> tuple[Path, ...]:
        return definition_folders(self.settings)

    def reload(self) -> Catalog:
        """Rebuild the catalog from disk and swap it in; returns the new snapshot."""
        with self._reload_lock:
            current = fingerprint(self.folders)
            mcp = self._mcp_tools() if self._mcp_tools is not None else None
            try:
                catalog = build_catalog(self.settings, self.builtin_tools, version=self._snapshot.version + 1,
                                        mcp=mcp)
            finally:
                # a failed build is not retried until the files change again (it would fail the same way)
                self._fingerprint = current
            self._snapshot = catalog
        logger.info(
            "catalog v%d: %d agents, %d models, %d tools, %d skills, %d viewports, %d rejected",
            catalog.version,
            len(catalog.agents),
            len(catalog.models),
            len(catalog.tools),
            len(catalog.skills),
            len(catalog.viewports),
            len(catalog.rejections),
        )
        return catalog

    def _reload_logged(self, only_if_changed: bool = False) -> None:
        """``reload()`` (or ``reload_if_changed()``) for the watcher and the rescan: a failed build is
        logged and the current snapshot stays live, so hot reload goes on with the next change."""
        try:
            if only_if_changed:
                self.reload_if_changed()
            else:
                self.reload()
        except Exception:
            logger.exception("catalog reload failed; catalog v%d stays live", self._snapshot.version)

    def reload_if_changed(self) -> bool:
        """Rebuild only when the folders' fingerprint changed; True when it rebuilt."""
        if fingerprint(self.folders) == self._fingerprint:
            return False
        self.reload()
        return True

    async def start(self) -> None:
        """Install built-in models, load, and start watching. Idempotent while running."""
        if self._tasks:
            return
        sync_builtin_models(self.settings.models_dir, self._builtin_models_dir)
        await asyncio.to_thread(self.reload)
        self._stop = asyncio.Event()
        self._restart_watch = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="catalog-watch"),
            asyncio.create_task(self._rescan_loop(), name="catalog-rescan"),
        ]

    async def stop(self) -> None:
        """Stop the watcher and the rescan; the last snapshot stays readable."""
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _existing_folders(self) -> tuple[Path, ...]:
        return tuple(folder for folder in dict.fromkeys(self.folders) if folder.is_dir())

    async def _watch_loop(self) -> None:
        while not self._stop.is_set():
            folders = self._existing_folders()
            self._watched = folders
            self._restart_watch.clear()
            if not folders:
                await self._wait_restart()
                continue
            stop = asyncio.Event()
            relay = asyncio.create_task(self._relay_stop(stop))
            try:
                async for changes in awatch(
                    *folders,
                    watch_filter=DefaultFilter(),
                    debounce=self._debounce_ms,
                    step=WATCH_STEP_MS,
                    stop_event=stop,
                    ignore_permission_denied=True,
                ):
                    logger.debug("definition change: %s", sorted(path for _, path in changes))
                    await asyncio.to_thread(self._reload_logged)
            except (OSError, RuntimeError) as exc:
                logger.warning("file watcher failed (%s); relying on the periodic rescan", exc)
                await self._wait_restart()
            finally:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        """Stop the current ``awatch`` when the manager stops or the folder set changes."""
        await self._wait_restart()
        stop.set()

    async def _wait_restart(self) -> None:
        stop_wait = asyncio.create_task(self._stop.wait())
        restart_wait = asyncio.create_task(self._restart_watch.wait())
        try:
            await asyncio.wait({stop_wait, restart_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            restart_wait.cancel()

    async def _rescan_loop(self) -> None:
        interval = rescan_interval_s(self.settings)
        while not self._stop.is_set():
            await asyncio.sleep(interval)
            if self._existing_folders() != self._watched:
                self._restart_watch.set()
            await asyncio.to_thread(self._reload_logged, True)
