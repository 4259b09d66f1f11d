"""``GIFBuilder``: collect frames and save a Slack-friendly animated GIF (needs Pillow)."""

from __future__ import annotations

import os
from typing import Any

from core._pil import Image


class GIFBuilder:
    def __init__(self, width: int = 128, height: int = 128, fps: int = 10) -> None:
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError("width, height and fps must be positive")
        self.width, self.height, self.fps = width, height, fps
        self.frames: list[Any] = []

    def add_frame(self, frame: Any) -> None:
        """Add one PIL image (resized to the builder's size if needed)."""
        image = frame.convert("RGB")
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.LANCZOS)
        self.frames.append(image)

    def add_frames(self, frames: list[Any]) -> None:
        for frame in frames:
            self.add_frame(frame)

    def save(
        self,
        path: str,
        num_colors: int = 128,
        optimize_for_emoji: bool = False,
        remove_duplicates: bool = False,
    ) -> dict[str, Any]:
        """Write the GIF; returns ``{path, frames, width, height, fps, duration_s, size_kb}``."""
        if not self.frames:
            raise ValueError("no frames to save")
        frames = list(self.frames)
        if optimize_for_emoji:
            num_colors = min(num_colors, 48)
            if self.width > 128 or self.height > 128:
                frames = [f.resize((128, 128), Image.LANCZOS) for f in frames]
        frame_ms = max(int(round(1000 / self.fps)), 20)
        durations = [frame_ms] * len(frames)
        if remove_duplicates:
            kept, kept_durations = [frames[0]], [frame_ms]
            for frame in frames[1:]:
                if frame.tobytes() == kept[-1].tobytes():
                    kept_durations[-1] += frame_ms
                else:
                    kept.append(frame)
                    kept_durations.append(frame_ms)
            frames, durations = kept, kept_durations
        colors = max(2, min(int(num_colors), 256))
        palette = [f.quantize(colors=colors, method=Image.Quantize.MEDIANCUT) for f in frames]
        palette[0].save(
            path,
            save_all=True,
            append_images=palette[1:],
            duration=durations,
            loop=0,
            optimize=True,
            disposal=2,
        )
        width, height = palette[0].size
        return {
            "path": os.path.abspath(path),
            "frames": len(palette),
            "width": width,
            "height": height,
            "fps": self.fps,
            "duration_s": round(sum(durations) / 1000, 3),
            "size_kb": round(os.path.getsize(path) / 1024, 1),
        }
