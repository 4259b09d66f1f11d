"""Utilities for the slack-gif-creator skill (our own minimal implementation of the
API its SKILL.md describes). ``easing`` is pure Python; the other modules need Pillow
and raise a clear ``ImportError`` when it is not installed."""
