"""Definition catalog (SPEC §3): definition files → one immutable ``Catalog`` snapshot, hot-reloaded.

* ``definitions`` — the frozen dataclasses the rest of the gateway reads.
* ``jsonc`` — relaxed JSON (comments, trailing commas, triple-quoted prompts).
* ``models``, ``tools``, ``skills``, ``viewports``, ``agents`` — one loader per kind.
* ``loader.build_catalog`` — every folder → ``Catalog`` (bad files become ``Rejection``s).
* ``manager.CatalogManager`` — the live snapshot, file watching and fallback rescans.
"""
