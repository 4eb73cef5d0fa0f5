"""Turns (image, prompt, caption) into model-ready tensors, in DataLoader workers.

The sequence is Gemma 3's chat format with the world block in front of Gemma's image block::

    <bos><start_of_turn>user\n <the_world_start> [world tokens] <the_world_end>
    \n\n<start_of_image> [image soft tokens] <end_of_image>\n\n prompt <end_of_turn>\n
    <start_of_turn>model\n caption <end_of_turn>

An example of several images (a multi-image benchmark question) has one such pair of blocks per image, in the
images' order: each image's world block (its own world tokens) right before its own Gemma image block.

``segment_ids`` tells the model which positions take world / image embeddings; labels are -100
everywhere except the caption and its ``<end_of_turn>``; ``label_positions`` / ``label_targets``
list the labelled positions (see ``theworld.loss``).

Pixels are resized in the workers but stay uint8 through the DataLoader; ``normalize`` makes them
the model's float inputs (``TheWorldDataModule`` does it on the GPU, ``collate`` by default).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate

from theworld.data.config import DEFAULT_PROMPT
from theworld.loss import IGNORE_INDEX, labelled_rows
from theworld.world import world_token_count

PROMPT_CACHE_SIZE = 1024  # rendered prompts kept per processor (one per worker)
# segment_ids values
SEG_TEXT, SEG_IMAGE, SEG_WORLD_START, SEG_WORLD, SEG_WORLD_END = 0, 1, 2, 3, 4


def load_gemma_processor(gemma_model_name: str, revision: str | None = None, token: str | None = None):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(gemma_model_name, revision=revision, token=token)


def num_world_tokens(
    cosmos_model_name: str,
    subfolder: str,
    image_size: int,
    patch_size: int,
    revision: str | None = None,
    token: str | None = None,
) -> int:
    """World tokens per image, from the VAE's config alone (no weights are read)."""
    from diffusers import AutoencoderKLWan

    vae_config = AutoencoderKLWan.load_config(cosmos_model_name, subfolder=subfolder, revision=revision, token=token)
    return world_token_count(vae_config.get("scale_factor_spatial", 8), image_size, patch_size)


class _PixelInput:
    """One pixel input: resize to ``size`` (H, W) as uint8; ``normalize`` gives ``(x / 255 - mean) / std``."""

    def __init__(self, size: tuple[int, int], mean, std, resample: Image.Resampling):
        self.size = size
        self.resample = resample
        # The normalisation folded into one multiply-add per channel: x * scale + shift.
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(3, 1, 1)
        self.shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(3, 1, 1)

    def resize(self, image: Image.Image) -> torch.Tensor:
        """``uint8`` (3, H, W)."""
        resized = image.resize((self.size[1], self.size[0]), resample=self.resample)
        return torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``uint8`` (..., 3, H, W) -> ``float32`` on the same device."""
        return pixels.float().mul_(self.scale.to(pixels.device)).add_(self.shift.to(pixels.device))

    def to_images(self, pixels: torch.Tensor) -> list[Image.Image]:
        """Normalised (or uint8) ``(B, 3, H, W)`` back to RGB images (what the model saw, for galleries)."""
        if pixels.dtype != torch.uint8:
            pixels = ((pixels.detach().float().cpu() - self.shift) / self.scale).round().clamp(0, 255).byte()
        return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy()) for p in pixels]


def world_pixel_input(image_size: int) -> _PixelInput:
    """The VAE input: a square bicubic resize, scaled to [-1, 1] by ``normalize``."""
    return _PixelInput((image_size, image_size), (0.5,) * 3, (0.5,) * 3, Image.Resampling.BICUBIC)


class TheWorldProcessor:
    """Builds one training or generation example; ``collate`` pads a list of them into a batch.

    Example:
        >>> proc = TheWorldProcessor(load_gemma_processor("google/gemma-3-4b-it"), world_tokens=784,
        ...                          world_image_size=448)
        >>> example = proc(image, caption="a red circle")      # tensors for one sample (uint8 pixels)
        >>> batch = proc.collate([example, example])             # right-padded batch, float pixels
    """

    def __init__(
        self,
        gemma_processor,
        world_tokens: int,
        world_image_size: int,
        prompt: str = DEFAULT_PROMPT,
        max_caption_tokens: int = 64,
        gemma_image_tokens: bool = True,
    ):
        self.gemma_processor = gemma_processor
        self.gemma_image_tokens = gemma_image_tokens
        self.tokenizer = gemma_processor.tokenizer
        self.world_tokens = world_tokens
        self.world_image_size = world_image_size
        self.prompt = prompt
        self.max_caption_tokens = max_caption_tokens
        self.end_of_turn_id = self.tokenizer.convert_tokens_to_ids("<end_of_turn>")
        self.pad_id = self.tokenizer.pad_token_id
        self.image_token_id = self.tokenizer.image_token_id
        ip = gemma_processor.image_processor
        self._siglip = _PixelInput(
            (ip.size["height"], ip.size["width"]),
            ip.image_mean,
            ip.image_std,
            Image.Resampling(int(ip.resample)) if ip.resample is not None else Image.Resampling.BILINEAR,
        )
        self._world = world_pixel_input(world_image_size)
        self._prompts: dict[tuple[str, int], tuple[list[int], list[int]]] = {}  # (prompt, images) -> ids, segments

    @classmethod
    def from_config(cls, config, token: str | None = None, **kwargs) -> TheWorldProcessor:
        """Build from a ``TheWorldConfig``: reads the Gemma processor and the VAE's config only."""
        tokens = (
            num_world_tokens(
                config.cosmos_model_name,
                config.cosmos_subfolder,
                config.world_image_size,
                config.world_patch_size,
                config.cosmos_revision,
                token,
            )
            if config.enable_world
            else 0
        )
        return cls(
            load_gemma_processor(config.gemma_model_name, config.gemma_revision, token),
            tokens,
            config.world_image_size,
            gemma_image_tokens=config.gemma_image_tokens,
            **kwargs,
        )

    def _build_prompt(self, prompt: str, images: int = 1) -> tuple[list[int], list[int]]:
        """The prompt's ids and segment ids: Gemma 3's chat template with ``images`` images tokenised in one piece,
        exactly as ``Gemma3Processor`` does, with a world block inserted right before each ``<start_of_image>`` (or
        in its place when Gemma's image blocks are left out)."""
        content = [{"type": "image"}] * images + [{"type": "text", "text": prompt}]
        text = self.gemma_processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        boi = self.gemma_processor.boi_token
        if text.count(boi) != images:
            raise ValueError(
                f"The Gemma chat template did not place {images} image token(s); is this a Gemma 3 processor?"
            )
        if self.gemma_image_tokens:
            text = text.replace(boi, self.gemma_processor.full_image_sequence)
        boi_id = self.tokenizer.convert_tokens_to_ids(boi)
        world_ids, world_segments = [], []
        if self.world_tokens:
            world_ids = [self.pad_id] * (self.world_tokens + 2)
            world_segments = [SEG_WORLD_START] + [SEG_WORLD] * self.world_tokens + [SEG_WORLD_END]
        ids: list[int] = []
        segments: list[int] = []
        for token in self.tokenizer(text, add_special_tokens=False)["input_ids"]:
            if token == boi_id:
                ids += world_ids
                segments += world_segments
                if not self.gemma_image_tokens:
                    continue
            ids.append(token)
            segments.append(SEG_IMAGE if token == self.image_token_id else SEG_TEXT)
        return ids, segments

    def siglip_pixels(self, image: Image.Image) -> torch.Tensor:
        """Gemma's SigLIP input: ``float32`` (3, H, W)."""
        return self._siglip.normalize(self._siglip.resize(image))

    def world_pixels(self, image: Image.Image) -> torch.Tensor:
        """The VAE input: a square resize scaled to [-1, 1]."""
        return self._world.normalize(self._world.resize(image))

    def images(self, batch: dict[str, Any]) -> list[Image.Image] | None:
        """The images of a batch as the model saw them (the VAE input, else Gemma's); None from a latent cache."""
        for key, spec in (("world_pixels", self._world), ("pixel_values", self._siglip)):
            if key in batch:
                return spec.to_images(batch[key])
        return None

    def prompt_only(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A training batch cut before its answers: the generation input for the same images, left-padded.

        Each row is cut where its own answer starts (rows may have prompts of different lengths: captions beside
        questions), and the rows are padded on the left again, as ``generate_from_batch`` wants them.
        """
        positions = torch.arange(batch["input_ids"].shape[1], device=batch["input_ids"].device)
        rows = [
            mask.bool() & (positions < int((labels != IGNORE_INDEX).nonzero()[0]))
            for mask, labels in zip(batch["attention_mask"], batch["labels"], strict=True)
        ]
        length = max(int(row.sum()) for row in rows)
        cut = {
            key: torch.full((len(rows), length), fill, dtype=batch[key].dtype, device=positions.device)
            for key, fill in (("input_ids", self.pad_id), ("segment_ids", 0), ("attention_mask", 0))
        }
        for index, row in enumerate(rows):
            for key, values in cut.items():
                kept = batch[key][index][row]
                values[index, length - len(kept) :] = kept
        return {
            **{
                key: value
                for key, value in batch.items()
                if key not in ("labels", "label_positions", "label_targets", *cut)
            },
            **cut,
        }

    def normalize(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Turns a batch's uint8 ``pixel_values`` / ``world_pixels`` into the model's float inputs, on
        their device; float ones are left as they are."""
        for key, spec in (("pixel_values", self._siglip), ("world_pixels", self._world)):
            if key in batch and batch[key].dtype == torch.uint8:
                batch[key] = spec.normalize(batch[key])
        return batch

    def without_world(self) -> TheWorldProcessor:
        """This processor with the world block left out of every prompt (the ``no_world`` ablation of
        ``theworld.evaluate``; run the model inside ``TheWorld.without_world()``)."""
        plain = copy.copy(self)
        plain.world_tokens, plain._prompts = 0, {}
        return plain

    def __call__(
        self,
        image: Image.Image | Sequence[Image.Image],
        caption: str | None = None,
        prompt: str | None = None,
        world_latents: torch.Tensor | None = None,
        world_image: Image.Image | Sequence[Image.Image] | None = None,
    ) -> dict[str, Any]:
        """One example. ``image`` may be several images (a multi-image question): each gets its own world block and
        Gemma image block, in order, and the example's ``pixel_values`` / ``world_pixels`` are ``(k, 3, H, W)``.
        ``world_latents`` (the image's world tokens from a latent cache, see ``theworld.latent_cache``) replace the
        VAE input ``world_pixels``; ``world_image`` (one per image) puts other images' world tokens in the world
        slots (the ``shuffled_world`` ablation), Gemma's image blocks keep ``image``."""
        images = [_rgb(i) for i in _as_list(image)]
        worlds = images if world_image is None else [_rgb(w) for w in _as_list(world_image)]
        if len(worlds) != len(images):
            raise ValueError(f"{len(images)} image(s) need as many world images, not {len(worlds)}.")
        prompt = prompt or self.prompt
        key = (prompt, len(images))
        if key not in self._prompts:  # the chat template is rendered once per distinct prompt
            if len(self._prompts) >= PROMPT_CACHE_SIZE:  # question-answer data: a prompt per sample; keep the newest
                del self._prompts[next(iter(self._prompts))]
            self._prompts[key] = self._build_prompt(*key)
        prompt_ids, segments = self._prompts[key]
        labels = [IGNORE_INDEX] * len(prompt_ids)
        ids = list(prompt_ids)
        if caption is not None:
            answer = self.tokenizer(caption, add_special_tokens=False)["input_ids"][: self.max_caption_tokens]
            answer.append(self.end_of_turn_id)
            ids += answer
            labels += answer
            segments = segments + [SEG_TEXT] * len(answer)
        example = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "segment_ids": torch.tensor(segments, dtype=torch.uint8),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if self.gemma_image_tokens:
            example["pixel_values"] = _resized(self._siglip, images)  # uint8 until the batch is normalised
        if world_latents is not None:
            if world_latents.shape[0] != self.world_tokens:
                raise ValueError(
                    f"Cached world latents hold {world_latents.shape[0]} tokens but this model takes "
                    f"{self.world_tokens} per image; rebuild the cache for this model's world layout."
                )
            example["world_latents"] = world_latents
        elif self.world_tokens:
            example["world_pixels"] = _resized(self._world, worlds)
        return example

    def collate(
        self, examples: list[dict[str, Any]], padding_side: str = "right", normalize: bool = True
    ) -> dict[str, Any]:
        """Pads to the longest example; anything that is not a model input (keys, counters) is kept as lists.

        ``normalize=False`` leaves the pixels uint8, for ``normalize(batch)`` to finish on the GPU: a
        quarter of float32's bytes through shared memory, pinning and the host-to-device copy.
        """
        length = max(len(e["input_ids"]) for e in examples)
        batch_size = len(examples)
        input_ids = torch.full((batch_size, length), self.pad_id, dtype=torch.long)
        segment_ids = torch.zeros((batch_size, length), dtype=torch.uint8)
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            span = slice(0, n) if padding_side == "right" else slice(length - n, length)
            input_ids[row, span] = example["input_ids"]
            segment_ids[row, span] = example["segment_ids"]
            labels[row, span] = example["labels"]
            attention_mask[row, span] = 1
        positions, targets = labelled_rows(labels)
        batch = {
            "input_ids": input_ids,
            "segment_ids": segment_ids,
            "labels": labels,
            # Where the loss is taken, worked out here on the CPU so the training step needs no host sync.
            "label_positions": positions,
            "label_targets": targets,
            "attention_mask": attention_mask,
            "tokens": int(attention_mask.sum()),  # for throughput figures, counted here so the step needs no sync
        }
        # In a DataLoader worker, default_collate stacks straight into shared memory, where the batch must go
        # anyway on its way to the main process.
        for key in ("pixel_values", "world_pixels", "world_latents"):
            if key in examples[0]:
                if not all(key in e for e in examples):
                    raise ValueError(
                        f"Some samples of this batch have {key} and some do not: train from a latent "
                        "cache or from images, not a mix of both."
                    )
                values = [e[key] for e in examples]
                if any(value.dim() == 4 for value in values):  # multi-image examples: every image, in block order
                    batch[key] = torch.cat([value.reshape(-1, *value.shape[-3:]) for value in values])
                else:
                    batch[key] = default_collate(values)
        for key in examples[0]:
            if key not in batch:
                batch[key] = [e.get(key) for e in examples]
        return self.normalize(batch) if normalize else batch


def _as_list(images: Image.Image | Sequence[Image.Image]) -> list[Image.Image]:
    return [images] if isinstance(images, Image.Image) else list(images)


def _rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB") if image.mode != "RGB" else image


def _resized(spec: _PixelInput, images: list[Image.Image]) -> torch.Tensor:
    """One image ``(3, H, W)``, as a batch of one-image examples has always stacked; several ``(k, 3, H, W)``."""
    return spec.resize(images[0]) if len(images) == 1 else torch.stack([spec.resize(image) for image in images])
