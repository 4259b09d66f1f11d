"""Frame helpers: backgrounds, circles, stars, text (needs Pillow)."""

from __future__ import annotations

import math
from typing import Any

from core._pil import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]


def create_blank_frame(width: int, height: int, color: Color = (255, 255, 255)) -> Any:
    return Image.new("RGB", (width, height), color)


def create_gradient_background(width: int, height: int, top: Color, bottom: Color) -> Any:
    """A vertical gradient from ``top`` to ``bottom``."""
    frame = Image.new("RGB", (width, height), top)
    draw = ImageDraw.Draw(frame)
    for y in range(height):
        t = y / max(height - 1, 1)
        color = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (width, y)], fill=color)
    return frame


def draw_circle(
    frame: Any, center: tuple[float, float], radius: float, fill: Color | None = None,
    outline: Color | None = None, width: int = 2,
) -> Any:
    x, y = center
    ImageDraw.Draw(frame).ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=outline, width=width)
    return frame


def draw_star(
    frame: Any, center: tuple[float, float], size: float, fill: Color | None = (255, 215, 0),
    outline: Color | None = None, width: int = 2,
) -> Any:
    """A 5-pointed star of outer radius ``size``."""
    cx, cy = center
    points = []
    for i in range(10):
        radius = size if i % 2 == 0 else size * 0.4
        angle = math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy - radius * math.sin(angle)))
    ImageDraw.Draw(frame).polygon(points, fill=fill, outline=outline, width=width)
    return frame


def draw_text(
    frame: Any, text: str, position: tuple[float, float], color: Color = (0, 0, 0), size: int = 16,
    centered: bool = False,
) -> Any:
    draw = ImageDraw.Draw(frame)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size parameter
        font = ImageFont.load_default()
    x, y = position
    if centered:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x -= (right - left) / 2
        y -= (bottom - top) / 2
    draw.text((x, y), text, fill=color, font=font)
    return frame
