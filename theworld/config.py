"""TheWorldConfig: everything needed to rebuild a TheWorld model, saved as ``config.json``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"


@dataclass
class TheWorldConfig:
    """The base model ids, the world-token layout, the projector and the freeze flags.

    Example:
        >>> cfg = TheWorldConfig(world_image_size=512, world_patch_size=1)
        >>> cfg.save("out/")  # writes out/config.json
        >>> TheWorldConfig.load("out/").world_image_size
        512
    """

    gemma_model_name: str = "google/gemma-3-4b-it"
    cosmos_model_name: str = "nvidia/Cosmos-Predict2-2B-Video2World"
    cosmos_subfolder: str = "vae"
    freeze_gemma_vision: bool = True
    freeze_gemma_language: bool = True
    freeze_cosmos_vae: bool = True
    enable_world: bool = True
    world_image_size: int = 448
    world_patch_size: int = 2
    projector_hidden_dim: int | None = None  # None: Gemma's hidden size
    # Dtype of the frozen weights: "auto" picks bfloat16 on CUDA, float32 elsewhere. Trainable
    # weights are always float32 master weights.
    frozen_dtype: str = "auto"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TheWorldConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"model_type", "theworld_version"})
        if unknown:
            raise ValueError(f"Unknown TheWorld config keys {unknown}; known keys are {sorted(known)}.")
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"model_type": "theworld", **self.to_dict()}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TheWorldConfig":
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        return cls.from_dict(json.loads(path.read_text()))
