"""The world path: Cosmos VAE encoder -> normalised latents -> patches -> world tokens.

``WorldEncoder`` wraps only the VAE of a Cosmos checkpoint (diffusers ``AutoencoderKLWan`` in its
``vae`` subfolder), never the whole video pipeline. ``WorldProjector`` maps latent patches to
Gemma's hidden size, scaled to match the size of Gemma's text embeddings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:
    # From its module: the package's own TYPE_CHECKING branch names a dummy class without torch
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    try:
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
    except KeyError:
        raise ValueError(f"frozen_dtype={name!r}: use 'auto', 'bfloat16', 'float16' or 'float32'.") from None


def patchify(latents: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H/p * W/p, C * p * p)``, row-major over patches."""
    batch, channels, height, width = latents.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"Latent size {height}x{width} is not divisible by world_patch_size={patch_size}.")
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = latents.reshape(batch, channels, grid_h, patch_size, grid_w, patch_size)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, grid_h * grid_w, channels * patch_size * patch_size)


def world_token_count(vae_downsampling: int, image_size: int, patch_size: int) -> int:
    """World tokens per image: ``(image_size / downsampling / patch_size)^2``, refusing sizes that don't divide."""
    step = vae_downsampling * patch_size
    if image_size % step:
        raise ValueError(
            f"world_image_size={image_size} must be a multiple of {step} "
            f"(the VAE's {vae_downsampling}x downsampling times world_patch_size={patch_size})."
        )
    return (image_size // step) ** 2


class WorldEncoder(nn.Module):
    """Encodes images in ``[-1, 1]`` (``(B, 3, H, W)``) into normalised, patchified Cosmos latents.

    Example:
        >>> enc = WorldEncoder.from_pretrained("nvidia/Cosmos-Predict2-2B-Video2World", patch_size=2)
        >>> tokens = enc(images)  # (B, 784, 64) for 448x448 images
    """

    def __init__(self, vae: AutoencoderKLWan, patch_size: int):
        super().__init__()
        self.vae = vae
        self.patch_size = patch_size
        # diffusers' config is a FrozenDict typed as a plain dict: read by key, not by attribute
        z_dim = vae.config["z_dim"]
        # Registered as buffers so they follow .to(device) but are never saved as weights.
        mean = torch.tensor(vae.config["latents_mean"], dtype=torch.float32).view(1, z_dim, 1, 1)
        inv_std = 1.0 / torch.tensor(vae.config["latents_std"], dtype=torch.float32).view(1, z_dim, 1, 1)
        self.register_buffer("latents_mean", mean, persistent=False)
        self.register_buffer("latents_inv_std", inv_std, persistent=False)
        # Channels-last (NDHWC): the VAE's RMS norms reduce over channels, which then lie next to each other in
        # memory; on CPU the encoder runs 2.4x faster (bench/RESULTS.md). Values and state-dict keys are unchanged.
        for module in vae.modules():
            if isinstance(module, nn.Conv3d):
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)

    @classmethod
    def from_pretrained(
        cls,
        model_name: str,
        subfolder: str = "vae",
        patch_size: int = 2,
        dtype: torch.dtype = torch.float32,
        revision: str | None = None,
        token: str | None = None,
    ) -> WorldEncoder:
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(
            model_name, subfolder=subfolder, torch_dtype=dtype, revision=revision, token=token
        )
        # Only the encoder half is ever used; dropping the decoder saves its memory.
        vae.decoder = None
        vae.post_quant_conv = None
        return cls(vae, patch_size)

    @property
    def latent_channels(self) -> int:
        return self.vae.config["z_dim"]

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size**2

    def num_tokens(self, image_size: int) -> int:
        return world_token_count(self.vae.config["scale_factor_spatial"], image_size, self.patch_size)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[-1, 1]`` -> normalised latents ``(B, z_dim, H/8, W/8)`` in float32."""
        dtype = next(self.vae.parameters()).dtype
        video = images.to(dtype).unsqueeze(2).contiguous(memory_format=torch.channels_last_3d)  # one frame: T=1
        latents = self.vae.encode(video).latent_dist.mode()[:, :, 0].float()
        return (latents - self.latents_mean) * self.latents_inv_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return patchify(self.encode_latents(images), self.patch_size)


class WorldProjector(nn.Module):
    """Linear -> GELU -> Linear, then an RMS norm whose gain starts at the text embeddings' RMS; with
    ``positions``, plus a learned embedding of each token's place in the latent grid.

    Without the norm, world tokens would start orders of magnitude away from the scale of Gemma's
    (``sqrt(hidden)``-scaled) text embeddings and dominate or vanish in attention.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        target_rms: float = 1.0,
        positions: int | None = None,
    ):
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        self.norm = nn.RMSNorm(out_dim, eps=1e-6)
        # Drawn as torch's nn.Embedding draws: N(0, 1), distinct places from the start (from zeros, the tiny demo
        # model never learned to tell them apart).
        self.position = nn.Parameter(torch.randn(positions, out_dim)) if positions else None
        with torch.no_grad():
            self.norm.weight.fill_(target_rms)

    def forward(self, latent_patches: torch.Tensor) -> torch.Tensor:
        first = cast(nn.Linear, self.net[0])  # Sequential indexing is typed as a plain Module
        tokens = self.norm(self.net(latent_patches.to(first.weight.dtype)))
        return tokens if self.position is None else tokens + self.position
