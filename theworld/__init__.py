"""TheWorld: Gemma 3 fused with Cosmos world tokens."""

from theworld.config import TheWorldConfig
from theworld.model import TheWorld

__all__ = ["TheWorld", "TheWorldConfig"]
