from __future__ import annotations

from .spans import spans

__all__ = ["spans"]
