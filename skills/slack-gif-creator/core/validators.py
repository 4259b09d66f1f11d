"""Check a GIF against Slack's limits (needs Pillow).

Emoji: at most 128x128, at most 3 s, under 128 KB. Message GIFs: at most 480x480.
"""

from __future__ import annotations

import os
from typing import Any

from core._pil import Image

EMOJI_MAX_SIDE = 128
EMOJI_MAX_SECONDS = 3.0
EMOJI_MAX_KB = 128
MESSAGE_MAX_SIDE = 480


def validate_gif(path: str, is_emoji: bool = True, verbose: bool = False) -> tuple[bool, dict[str, Any]]:
    """``(passes, info)``; ``info`` has size, frames, duration, file size and the problems found."""
    with Image.open(path) as image:
        width, height = image.size
        frames = getattr(image, "n_frames", 1)
        duration_ms = 0
        for index in range(frames):
            image.seek(index)
            duration_ms += int(image.info.get("duration", 0) or 0)
    size_kb = os.path.getsize(path) / 1024
    problems: list[str] = []
    max_side = EMOJI_MAX_SIDE if is_emoji else MESSAGE_MAX_SIDE
    if width > max_side or height > max_side:
        problems.append(f"dimensions {width}x{height} exceed {max_side}x{max_side}")
    if is_emoji and duration_ms / 1000 > EMOJI_MAX_SECONDS:
        problems.append(f"duration {duration_ms / 1000:.2f}s exceeds {EMOJI_MAX_SECONDS:g}s")
    if is_emoji and size_kb > EMOJI_MAX_KB:
        problems.append(f"file size {size_kb:.1f} KB exceeds {EMOJI_MAX_KB} KB")
    info = {
        "path": os.path.abspath(path),
        "width": width,
        "height": height,
        "frames": frames,
        "duration_s": round(duration_ms / 1000, 3),
        "fps": round(frames / (duration_ms / 1000), 1) if duration_ms else None,
        "size_kb": round(size_kb, 1),
        "is_emoji": is_emoji,
        "problems": problems,
    }
    if verbose:
        print(("PASS" if not problems else "FAIL") + f": {info}")
    return not problems, info


def is_slack_ready(path: str, is_emoji: bool = True) -> bool:
    return validate_gif(path, is_emoji=is_emoji)[0]
