"""``python -m app serve`` — the same as ``agw serve``."""

from app.cli import main

raise SystemExit(main())
