"""TheWorld: Gemma 3 with Cosmos world tokens in its input sequence.

The model knows nothing of Lightning: load it, train it, generate with it in plain PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from theworld.config import TheWorldConfig
from theworld.data.processing import (
    SEG_IMAGE,
    SEG_WORLD,
    SEG_WORLD_END,
    SEG_WORLD_START,
    TheWorldProcessor,
    load_gemma_processor,
)
from theworld.hub import pin_bases
from theworld.loss import labelled_rows, linear_cross_entropy
from theworld.world import WorldEncoder, WorldProjector, resolve_dtype

if TYPE_CHECKING:
    from transformers import Gemma3ForConditionalGeneration
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

log = logging.getLogger(__name__)

WORLD_START_TOKEN = "<the_world_start>"
WORLD_END_TOKEN = "<the_world_end>"

_OPTION_NAMES = {f.name for f in fields(TheWorldConfig)}


class TheWorld(nn.Module):
    """Gemma 3 + Cosmos VAE world tokens + a trainable projector.

    Example:
        >>> model = TheWorld("google/gemma-3-4b-it", freeze_gemma_vision=True,
        ...                  freeze_gemma_language=True, freeze_cosmos_vae=True)
        >>> out = model(**batch)                      # batch from TheWorldProcessor.collate
        >>> out["loss"].backward()
        >>> model.generate(images=[pil_image], prompt="Describe the image.")
        ['a red circle on a blue background']
    """

    def __init__(
        self,
        gemma_model_name: str = TheWorldConfig.gemma_model_name,
        cosmos_model_name: str = TheWorldConfig.cosmos_model_name,
        freeze_gemma_vision: bool = True,
        freeze_gemma_language: bool = True,
        freeze_cosmos_vae: bool = True,
        token: str | None = None,
        **options,
    ):
        super().__init__()
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise TypeError(f"TheWorld got unknown options {unknown}; valid ones are {sorted(_OPTION_NAMES)}.")
        config = TheWorldConfig(
            gemma_model_name=gemma_model_name,
            cosmos_model_name=cosmos_model_name,
            freeze_gemma_vision=freeze_gemma_vision,
            freeze_gemma_language=freeze_gemma_language,
            freeze_cosmos_vae=freeze_cosmos_vae,
            **options,
        )
        # The exact base commits (absolute paths for local folders) go into config.json with the weights.
        self.config = pin_bases(config, token)
        self._assemble(*self._load_base(self.config, token), token=token)

    @staticmethod
    def _load_base(
        cfg: TheWorldConfig,
        token: str | None = None,
    ) -> tuple[Gemma3ForConditionalGeneration, WorldEncoder | None]:
        from transformers import Gemma3ForConditionalGeneration

        frozen_dtype = resolve_dtype(cfg.frozen_dtype)
        gemma = Gemma3ForConditionalGeneration.from_pretrained(
            cfg.gemma_model_name,
            # revision=None means the default branch to the Hub client, but transformers annotates it as str
            revision=cfg.gemma_revision,  # type: ignore[arg-type]
            token=token,
            dtype=frozen_dtype,
            attn_implementation=cfg.attn_implementation,
        )
        world_encoder = None
        if cfg.enable_world:
            world_encoder = WorldEncoder.from_pretrained(
                cfg.cosmos_model_name,
                cfg.cosmos_subfolder,
                cfg.world_patch_size,
                dtype=frozen_dtype,
                revision=cfg.cosmos_revision,
                token=token,
            )
        return gemma, world_encoder

    def _assemble(
        self, gemma: Gemma3ForConditionalGeneration, world_encoder: WorldEncoder | None, token: str | None = None
    ) -> None:
        cfg = self.config
        self._token = token  # for the processor files, loaded when first needed
        self.gemma = gemma
        self.world_encoder = world_encoder
        self.projector: WorldProjector | None = None
        if world_encoder is not None:
            hidden = gemma.config.get_text_config().hidden_size
            text_rms = self._text_embedding_rms()
            # Drawn on the CPU generator whatever device the bases sit on, so a seed gives the same
            # projector on one GPU, under FSDP or on CPU.
            with torch.device("cpu"):
                self.projector = WorldProjector(
                    world_encoder.token_dim,
                    hidden,
                    cfg.projector_hidden_dim,
                    text_rms,
                    positions=self.num_world_tokens if cfg.world_position_embedding else None,
                )
            # <the_world_start>, <the_world_end>: their own 2 x hidden parameter, not new rows of the
            # 262k-row embedding matrix. They start as Gemma's <start_of_image> / <end_of_image>: two distinct
            # tokens at the scale of text embeddings that already mean "an image block opens / closes".
            bounds = self._text_embeddings()(torch.tensor(self._image_bound_ids(), device=self._embedding_device()))
            self.world_token_embeds = nn.Parameter(bounds.detach().float().clone())
            self.projector.to(bounds.device)
        self._processor: TheWorldProcessor | None = None
        self._world_left_out = False  # inside without_world()
        self._apply_freeze()
        if cfg.gradient_checkpointing:
            self.gemma.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # from_pretrained leaves the bases in eval mode; gradient checkpointing only acts in train mode
        # (Gemma 3, SigLIP and the VAE have no dropout, so train mode changes nothing else).
        self.train()

    # ----------------------------------------------------------------- construction helpers
    @classmethod
    def from_config(cls, config: TheWorldConfig) -> TheWorld:
        return cls(**config.to_dict())

    @classmethod
    def from_modules(
        cls, config: TheWorldConfig, gemma: Gemma3ForConditionalGeneration, world_encoder: WorldEncoder | None
    ) -> TheWorld:
        """Assembles TheWorld around base modules built elsewhere (e.g. random weights for a benchmark).

        The processor is still read from ``config.gemma_model_name``.
        """
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.config = config
        model._assemble(gemma, world_encoder)
        return model

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str,
        revision: str | None = None,
        token: str | None = None,
        subfolder: str | None = None,
        **overrides,
    ) -> TheWorld:
        """Rebuild the base models from ``config.json`` and load the trainable weights.

        ``path_or_repo`` is a local folder (a ``checkpoint-N/``, ``final/``) or a Hub repo id.
        Unexpected or missing trainable keys raise an error naming them.
        """
        from theworld.checkpoint import load_pretrained

        return load_pretrained(cls, path_or_repo, revision=revision, token=token, subfolder=subfolder, **overrides)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """torch's, except that tensors shaped for another layout (``projector_hidden_dim``, ``world_patch_size``)
        are refused with the options to use, not torch's size-mismatch dump. Trainable weights only::

            model.load_state_dict(load_file("runs/demo/checkpoints/final/model.safetensors"), strict=False)
        """
        from theworld.checkpoint import check_shapes

        check_shapes(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _text_embeddings(self) -> Gemma3TextScaledWordEmbedding:
        # Gemma 3's input embedding is always its scaled embedding; transformers declares a plain nn.Module
        return cast("Gemma3TextScaledWordEmbedding", self.gemma.get_input_embeddings())

    def _embedding_device(self) -> torch.device:
        return self._text_embeddings().weight.device

    def _image_bound_ids(self) -> list[int]:
        boi, eoi = self.gemma.config.boi_token_index, self.gemma.config.eoi_token_index
        assert boi is not None and eoi is not None  # Gemma3Config always sets them (it has defaults)
        return [boi, eoi]

    def _text_embedding_rms(self) -> float:
        emb = self._text_embeddings()
        return float(emb.weight.detach().float().pow(2).mean(-1).sqrt().mean() * float(emb.embed_scale))

    def _apply_freeze(self) -> None:
        cfg = self.config
        groups = {
            "vision": (
                [self.gemma.model.vision_tower, self.gemma.model.multi_modal_projector],
                cfg.freeze_gemma_vision,
            ),
            "language": ([self.gemma.model.language_model, self.gemma.lm_head], cfg.freeze_gemma_language),
        }
        if self.world_encoder is not None:
            groups["cosmos"] = ([self.world_encoder], cfg.freeze_cosmos_vae)
        for modules, frozen in groups.values():
            for module in modules:
                module.requires_grad_(not frozen)
        if self.world_encoder is not None:
            # The VAE's temporal convolutions never see a one-frame input: no gradient would reach them
            # (and DDP would need find_unused_parameters), so they stay frozen even with the VAE trainable.
            for name, param in self.world_encoder.named_parameters():
                if "time_conv" in name:
                    param.requires_grad_(False)
        # Trainable weights are fp32 master weights whatever the frozen weights' dtype.
        for param in self.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()

    @property
    def num_world_tokens(self) -> int:
        """World tokens per image (0 with ``enable_world=False``)."""
        return self.world_encoder.num_tokens(self.config.world_image_size) if self.world_encoder else 0

    @property
    def processor(self) -> TheWorldProcessor:
        """Builds model inputs for this model's base ids and world layout."""
        if self._processor is None:
            self._processor = TheWorldProcessor(
                load_gemma_processor(self.config.gemma_model_name, self.config.gemma_revision, self._token),
                self.num_world_tokens,
                self.config.world_image_size,
                gemma_image_tokens=self.config.gemma_image_tokens,
            )
        return self._processor

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trainable tensors, keyed as in ``state_dict()`` (tied weights once)."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @contextlib.contextmanager
    def without_world(self):
        """Runs the model with the world block left out (the ``no_world`` ablation): batches come from
        ``processor.without_world()`` and carry no world slots and no world input.

        Example:
            >>> with model.without_world():
            ...     model.generate_from_batch(model.processor.without_world().collate(examples, padding_side="left"))
        """
        self._world_left_out = True
        try:
            yield self
        finally:
            self._world_left_out = False

    # ----------------------------------------------------------------------- forward pass
    def encode_world(self, world_pixels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> world tokens ``(B, N, hidden)``."""
        assert self.world_encoder is not None and self.projector is not None, "enable_world=False has no world path"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_cosmos_vae):
            latents = self.world_encoder(world_pixels)
        return self.projector(latents)

    def embed(self, input_ids, segment_ids, pixel_values=None, world_pixels=None, world_latents=None) -> torch.Tensor:
        """Token embeddings with Gemma image features and world tokens written into their slots (a row of several
        images, a multi-image question, fills its blocks with its images in order: ``pixel_values`` and
        ``world_pixels`` hold every image of the batch, row by row).

        The world tokens come from ``world_pixels`` through the VAE, or from ``world_latents``
        precomputed by ``theworld.latent_cache`` (only while the VAE is frozen).
        """
        embeds = self._text_embeddings()(input_ids)
        if pixel_values is not None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_gemma_vision):
                vision_dtype = self.gemma.model.vision_tower.dtype
                image_features = self.gemma.model.get_image_features(pixel_values.to(vision_dtype)).pooler_output
            embeds = scatter_rows(embeds, segment_ids == SEG_IMAGE, image_features)
        if self.world_encoder is not None and not self._world_left_out:
            assert self.projector is not None  # built with the world encoder
            if world_latents is not None:
                if not self.config.freeze_cosmos_vae:
                    raise ValueError(
                        "Cached world latents stand for a frozen VAE, but freeze_cosmos_vae is false: "
                        "train the VAE from images (webdataset or parquet source) instead of the cache."
                    )
                world = self.projector(world_latents)
            elif world_pixels is not None:
                world = self.encode_world(world_pixels)
            else:
                raise ValueError("enable_world=True needs world_pixels (the VAE input) or world_latents in the batch.")
            embeds = scatter_rows(embeds, segment_ids == SEG_WORLD, world)
            special = self.world_token_embeds.to(embeds.dtype)
            embeds = torch.where((segment_ids == SEG_WORLD_START).unsqueeze(-1), special[0], embeds)
            embeds = torch.where((segment_ids == SEG_WORLD_END).unsqueeze(-1), special[1], embeds)
        return embeds

    def hidden_states(
        self,
        input_ids,
        segment_ids,
        attention_mask=None,
        pixel_values=None,
        world_pixels=None,
        position_ids=None,
        world_latents=None,
        **cache_kwargs,
    ) -> torch.Tensor:
        embeds = self.embed(input_ids, segment_ids, pixel_values, world_pixels, world_latents)
        cache_kwargs.setdefault("use_cache", False)  # training and scoring keep no KV cache
        outputs = self.gemma.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            token_type_ids=self.bidirectional_blocks(segment_ids),
            position_ids=position_ids,
            **cache_kwargs,
        )
        return outputs.last_hidden_state

    def bidirectional_blocks(self, segment_ids: torch.Tensor) -> torch.Tensor:
        """Gemma's ``token_type_ids``: 1 marks tokens that attend to each other in both directions.

        Each contiguous run of 1s is a block of its own: Gemma's image tokens, and the world tokens with
        ``world_attention="bidirectional"`` (the world block never touches the image block: ``<the_world_end>``
        and ``<start_of_image>`` sit between them).
        """
        blocks = segment_ids == SEG_IMAGE
        if self.config.world_attention == "bidirectional":
            blocks = blocks | (segment_ids == SEG_WORLD)
        return blocks.long()

    def forward(
        self,
        input_ids,
        segment_ids,
        attention_mask=None,
        pixel_values=None,
        world_pixels=None,
        labels=None,
        label_positions=None,
        label_targets=None,
        world_latents=None,
        return_logits: bool = False,
        **_unused,
    ) -> dict[str, torch.Tensor]:
        """Loss on answer tokens only, computed chunk by chunk: no full-vocabulary logits tensor.

        ``label_positions`` / ``label_targets`` come from ``processor.collate``; given ``labels``
        alone, they are worked out here (on a GPU that costs one host sync).
        """
        hidden = self.hidden_states(
            input_ids, segment_ids, attention_mask, pixel_values, world_pixels, world_latents=world_latents
        )
        out: dict[str, torch.Tensor] = {}
        if return_logits:
            out["logits"] = self.gemma.lm_head(hidden)
        if label_targets is None and labels is not None:
            label_positions, label_targets = labelled_rows(labels)
        if label_targets is not None:
            rows = hidden.flatten(0, 1).index_select(0, label_positions)
            out["loss"], out["num_tokens"] = linear_cross_entropy(rows, self.gemma.lm_head.weight, label_targets)
        return out

    # ------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, images, prompt: str | None = None, max_new_tokens: int = 32, return_scores: bool = False):
        """Greedy decoding: world + image tokens go into the prefill, then the KV cache decodes.

        Returns the decoded answers, and with ``return_scores=True`` also the per-step logits
        ``(B, steps, vocab)``.
        """
        proc = self.processor
        batch = proc.collate([proc(image, prompt=prompt) for image in images], padding_side="left")
        return self.generate_from_batch(batch, max_new_tokens, return_scores)

    @torch.no_grad()
    def generate_from_batch(
        self,
        batch: dict,
        max_new_tokens: int = 32,
        return_scores: bool = False,
        answered: Callable[[str], bool] | None = None,
    ):
        """Like ``generate`` for a left-padded batch from ``processor.collate(..., padding_side="left")``.

        ``answered(text)``: a row whose text so far is a complete answer stops there (a multiple-choice answer is
        read from its first letter: the tokens after it cannot change it)."""
        proc = self.processor
        device = self.gemma.lm_head.weight.device
        hidden, cache, attention_mask, position_ids = self.prefill(batch)
        stop_ids = torch.tensor([proc.end_of_turn_id, proc.tokenizer.eos_token_id], device=device)
        finished = torch.zeros(attention_mask.shape[0], dtype=torch.bool, device=device)
        tokens, scores = [], []
        next_position = position_ids[:, -1:] + 1
        for _ in range(max_new_tokens):
            logits = self.gemma.lm_head(hidden[:, -1]).float()
            scores.append(logits)
            next_token = logits.argmax(-1).masked_fill(finished, proc.pad_id)
            tokens.append(next_token)
            finished |= torch.isin(next_token, stop_ids)
            if answered is not None:
                texts = proc.tokenizer.batch_decode(torch.stack(tokens, dim=1), skip_special_tokens=True)
                finished |= torch.tensor([answered(text) for text in texts], device=device)
            if bool(finished.all()):
                break
            attention_mask = torch.cat([attention_mask, (~finished).long().unsqueeze(-1)], dim=-1)
            hidden = self.extend(next_token.unsqueeze(-1), attention_mask, next_position, cache)
            next_position = next_position + 1
        texts = [t.strip() for t in proc.tokenizer.batch_decode(torch.stack(tokens, dim=1), skip_special_tokens=True)]
        return (texts, torch.stack(scores, dim=1)) if return_scores else texts

    def prefill(self, batch: dict):
        """A left-padded prompt batch through the model once, world and image blocks included: its hidden states, the
        KV cache it leaves, its attention mask and position ids (``extend`` continues from them)."""
        from transformers import DynamicCache

        device = self.gemma.lm_head.weight.device
        batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        attention_mask = batch["attention_mask"]
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.gemma.config.get_text_config())
        hidden = self.hidden_states(
            batch["input_ids"],
            batch["segment_ids"],
            attention_mask,
            batch.get("pixel_values"),
            batch.get("world_pixels"),
            position_ids=position_ids,
            world_latents=batch.get("world_latents"),
            use_cache=True,
            **{_cache_kwarg(): cache},
        )
        return hidden, cache, attention_mask, position_ids

    def extend(self, token_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache):
        """Hidden states of text ``token_ids`` (B, T) after what ``cache`` holds; ``attention_mask`` covers the cached
        positions and the new ones, ``position_ids`` are the new tokens'."""
        return self.gemma.model.language_model(
            inputs_embeds=self._text_embeddings()(token_ids),
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{_cache_kwarg(): cache},
        ).last_hidden_state


def scatter_rows(embeds: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Writes ``rows`` (``(B, N, H)`` or ``(M, H)``, in order) into the ``True`` positions of ``mask``.

    A gather by running count instead of ``masked_scatter``: no data-dependent shapes, so no host sync.
    """
    flat_mask = mask.flatten()
    index = (flat_mask.cumsum(0) - 1).clamp(min=0)
    gathered = rows.reshape(-1, rows.shape[-1]).to(embeds.dtype).index_select(0, index).view_as(embeds)
    return torch.where(mask.unsqueeze(-1), gathered, embeds)


@functools.cache
def _cache_kwarg() -> str:
    """transformers renamed ``past_key_values`` to ``cache`` in 5.2x; accept both (asked once, when generating)."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextModel

    params = inspect.signature(Gemma3TextModel.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
