"""Agent Gateway: definition-driven streaming agent gateway (see SPEC.md)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
