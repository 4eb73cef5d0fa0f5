"""TheWorldConfig: everything needed to rebuild a TheWorld model, saved as ``config.json``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

CONFIG_NAME = "config.json"


@dataclass
class TheWorldConfig:
    """The base models, the world-token layout, the projector and the freeze flags.

    Attributes:
        gemma_model_name: Gemma 3 model: a Hub id or a local folder in the Hugging Face format.
        cosmos_model_name: Cosmos model whose VAE encodes the world tokens: a Hub id or a local folder.
        cosmos_subfolder: Folder of the VAE inside the Cosmos repo.
        gemma_revision: Commit, branch or tag of the Gemma repo; resolved to the exact commit when the model loads
            and recorded in checkpoints, so resuming and loading use the same base weights.
        cosmos_revision: Commit, branch or tag of the Cosmos repo (recorded like gemma_revision).
        freeze_gemma_vision: Keep Gemma's SigLIP vision tower and multimodal projector frozen.
        freeze_gemma_language: Keep Gemma's language model (and its tied head) frozen.
        freeze_cosmos_vae: Keep the Cosmos VAE encoder frozen (needed to train from a latent cache).
        enable_world: Put world tokens into the sequence; false gives plain Gemma 3 (the baseline).
        world_image_size: Side in pixels of the square image the VAE encodes.
        world_patch_size: Latent patch side: (world_image_size / 8 / world_patch_size)^2 world tokens per image.
        world_attention: "bidirectional": world tokens attend to each other both ways, a block of their own like
            Gemma's image block; "causal": each world token sees only the ones before it.
        gemma_image_tokens: Keep Gemma's own image block (SigLIP tokens) in the sequence; false leaves the world
            tokens as the only view of the image.
        projector_hidden_dim: Hidden width of the world projector (default: Gemma's hidden size).
        world_position_embedding: Add a learned embedding of each world token's place in the latent grid to the
            projector's output. A world token's value says what the VAE saw, not where: Gemma's RoPE positions act
            on attention scores only, so "which shape is on the left" has to be learned from them (the tiny demo
            model never does; with the embedding it does in a few hundred steps). One (world tokens x hidden)
            trainable tensor, drawn N(0, 1) like torch's nn.Embedding.
        frozen_dtype: Dtype of the frozen weights: auto (bfloat16 on CUDA, float32 elsewhere), bfloat16, float16
            or float32. Trainable weights are always float32 master weights.
        attn_implementation: Gemma's attention: sdpa or eager.
        gradient_checkpointing: Recompute Gemma's activations in the backward pass (less memory, more time).

    Example:
        >>> cfg = TheWorldConfig(world_image_size=512, world_patch_size=1)
        >>> cfg.save("out/")  # writes out/config.json
        >>> TheWorldConfig.load("out/").world_image_size
        512
    """

    gemma_model_name: str = "google/gemma-3-4b-it"
    cosmos_model_name: str = "nvidia/Cosmos-Predict2-2B-Video2World"
    cosmos_subfolder: str = "vae"
    gemma_revision: str | None = None
    cosmos_revision: str | None = None
    freeze_gemma_vision: bool = True
    freeze_gemma_language: bool = True
    freeze_cosmos_vae: bool = True
    enable_world: bool = True
    world_image_size: int = 448
    world_patch_size: int = 2
    world_attention: Literal["bidirectional", "causal"] = "bidirectional"
    gemma_image_tokens: bool = True
    projector_hidden_dim: int | None = None
    world_position_embedding: bool = False
    frozen_dtype: str = "auto"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TheWorldConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"model_type", "theworld_version"})
        if unknown:
            raise ValueError(f"Unknown TheWorld config keys {unknown}; known keys are {sorted(known)}.")
        values = {k: v for k, v in data.items() if k in known}
        # Checkpoints written before world_attention existed were trained with causal world tokens.
        values.setdefault("world_attention", "causal")
        return cls(**values)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"model_type": "theworld", **self.to_dict()}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TheWorldConfig:
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        return cls.from_dict(json.loads(path.read_text()))
