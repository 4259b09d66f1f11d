"""Pillow, or a clear error: Pillow is not a dependency of the gateway itself."""

from __future__ import annotations

try:
    from PIL import Image, ImageDraw, ImageFont  # noqa: F401  (re-exported)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the slack-gif-creator skill needs Pillow, which is not installed in this environment "
        "(install it with: pip install pillow)"
    ) from exc
