"""TheWorld: Gemma 3 fused with Cosmos world tokens."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from theworld.config import TheWorldConfig
    from theworld.model import TheWorld

__all__ = ["TheWorld", "TheWorldConfig"]


def __getattr__(name: str) -> Any:
    # Imported when first used: `theworld` (the CLI) installs its signal handlers before torch is imported.
    if name == "TheWorld":
        from theworld.model import TheWorld

        return TheWorld
    if name == "TheWorldConfig":
        from theworld.config import TheWorldConfig

        return TheWorldConfig
    raise AttributeError(f"module 'theworld' has no attribute {name!r}")
