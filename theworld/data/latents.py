"""World latents stored with a sample (``{key}.world.pth``, written by ``theworld cache_latents``): the world tokens
of one image and the layout that made them, checked against the model that trains from them."""

from __future__ import annotations

import io
from typing import Any

import torch

from theworld.config import TheWorldConfig
from theworld.errors import UserError

WORLD_LATENTS_EXT = "world.pth"  # the member a latent cache adds to each sample
# What must match between the cache and the model that trains from it.
LAYOUT_FIELDS = ("cosmos_model_name", "cosmos_revision", "cosmos_subfolder", "world_image_size", "world_patch_size")


class LatentCacheError(UserError):
    """A latent cache that does not fit the run (another VAE or world layout, or an occupied output folder)."""


def layout(config: TheWorldConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in LAYOUT_FIELDS}


def pack_world_latents(tokens: torch.Tensor, config: TheWorldConfig) -> bytes:
    """One image's world tokens ``(N, token_dim)`` and the layout that made them, as ``.world.pth`` bytes."""
    buffer = io.BytesIO()
    torch.save({"tokens": tokens.contiguous(), **layout(config)}, buffer)
    return buffer.getvalue()


def unpack_world_latents(data: bytes, config: TheWorldConfig) -> torch.Tensor:
    """The world tokens of a ``.world.pth`` member, after checking they were made for ``config``'s layout."""
    # weights_only: a cache may come from anywhere, and plain tensors + strings need no code to load.
    stored = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    mismatched = {
        name: (stored.get(name), wanted) for name, wanted in layout(config).items() if stored.get(name) != wanted
    }
    if mismatched:
        differences = ", ".join(
            f"{name}: cache {cached!r} vs model {wanted!r}" for name, (cached, wanted) in mismatched.items()
        )
        raise LatentCacheError(
            f"The latent cache was made for another world layout ({differences}). Rebuild it with "
            "`theworld cache_latents` and this model config, or train from the images instead."
        )
    return stored["tokens"]
