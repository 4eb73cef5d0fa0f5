"""Tiny Gemma 3 and Cosmos-VAE checkpoints in the real Hugging Face formats.

They are written with the same classes as the real ones (``Gemma3ForConditionalGeneration``,
``Gemma3Processor`` with a trained BPE tokenizer, ``AutoencoderKLWan`` under ``vae/``) so that
``TheWorld`` loads them through its production ``from_pretrained`` path.

Example:
    >>> gemma_dir = write_tiny_gemma("assets/gemma-3-tiny")
    >>> cosmos_dir = write_tiny_cosmos("assets/cosmos-tiny")
    >>> model = TheWorld(gemma_dir, cosmos_dir, world_image_size=64)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

GEMMA_SPECIAL_TOKENS = [  # Gemma's own order for the first ids: pad 0, eos 1, bos 2, unk 3
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]

# Gemma 3's chat format: the system prompt is folded into the first user turn, assistant -> model.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set sys = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text'] -%}"
    "{%- set first_user_prefix = sys + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

_CORPUS = [
    "Describe the image.",
    "What is in the picture?",
    "a red green blue yellow purple orange white black",
    "circle square triangle star cross diamond hexagon shape on a background",
    "small large left right top bottom center",
    "The image shows a picture of an object.",
    # Gemma's vocabulary has tokens for runs of newlines, so the chat template's "user\n" followed by the image
    # block's "\n\n" tokenises differently in one piece than in two: the tiny tokenizer must merge them too.
    "user\n\n\nDescribe",
    "model\n",
    "\n\nDescribe the image.",
    "user\n\n\n",
    "\n\n\n\n",
]


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=GEMMA_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 8, trainer=trainer)
    return tokenizer


def write_tiny_gemma(
    out_dir: str | Path,
    hidden_size: int = 64,
    layer_types: tuple[str, ...] = ("sliding_attention", "full_attention"),
    sliding_window: int = 16,
    image_size: int = 32,
    patch_size: int = 8,
    mm_tokens_per_image: int = 4,
    seed: int = 0,
) -> str:
    """Write a tiny ``Gemma3ForConditionalGeneration`` + ``Gemma3Processor`` to ``out_dir``.

    It keeps what makes Gemma 3 Gemma 3 where a test could tell: sliding-window and full-attention layers
    (``layer_types``), a window shorter than a test sequence (about 50 tokens), a non-zero multimodal projector
    (transformers initialises it to zeros, which would make every image feature 0), and a tokenizer that merges
    runs of newlines as Gemma's does.
    """
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        PreTrainedTokenizerFast,
    )

    out_dir = Path(out_dir)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size=512),
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        additional_special_tokens=GEMMA_SPECIAL_TOKENS[5:],
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        padding_side="right",
    )
    image_processor = Gemma3ImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=mm_tokens_per_image,
    )
    vocab = len(tokenizer)

    def token_id(token: str) -> int:
        found = tokenizer.convert_tokens_to_ids(token)
        assert isinstance(found, int)  # one token in, one id out (transformers types both cases as one union)
        return found

    config = Gemma3Config(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=len(layer_types),
            layer_types=list(layer_types),
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=hidden_size // 4,
            sliding_window=sliding_window,
            max_position_embeddings=4096,
            pad_token_id=token_id("<pad>"),
            bos_token_id=token_id("<bos>"),
            eos_token_id=token_id("<eos>"),
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            vision_use_head=False,
        ),
        mm_tokens_per_image=mm_tokens_per_image,
        boi_token_index=token_id("<start_of_image>"),
        eoi_token_index=token_id("<end_of_image>"),
        image_token_index=token_id("<image_soft_token>"),
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    projector = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():  # features of the size of Gemma's text embeddings, as in the trained model
        projector.normal_(std=1.0 / projector.shape[0] ** 0.5)
    model.generation_config.eos_token_id = [token_id("<eos>"), token_id("<end_of_turn>")]
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return str(out_dir)


def _latent_statistics(vae, seed: int, samples: int = 64, size: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``vae``'s latents over synthetic images (as real VAE configs record them)."""
    import numpy as np

    from theworld.testing.synthetic import render_sample, sample_rng

    images = [np.asarray(render_sample(sample_rng(seed, i), size)[0], dtype=np.float32) for i in range(samples)]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 127.5 - 1.0
    with torch.no_grad():
        latents = vae.encode(pixels.unsqueeze(2)).latent_dist.mode()
    dims = (0, 2, 3, 4)
    return latents.mean(dims).tolist(), latents.std(dims).clamp(min=1e-6).tolist()


def write_tiny_cosmos(out_dir: str | Path, base_dim: int = 8, seed: int = 0) -> str:
    """Write a tiny Wan2.1-style ``AutoencoderKLWan`` under ``out_dir/vae`` (the Cosmos repo layout)."""
    # From its module: the package's own TYPE_CHECKING branch names a dummy class without torch
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=base_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1)
    # The real VAE's latents_mean / latents_std describe its own latents; a random VAE's latents are far smaller,
    # and with the real statistics every image would normalise to nearly the same vector. Measure ours instead.
    mean, std = _latent_statistics(vae, seed)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae.save_pretrained(out_dir / "vae")
    # The real repo is a diffusers pipeline; only its VAE is ever read.
    (out_dir / "model_index.json").write_text(
        json.dumps({"_class_name": "Cosmos2VideoToWorldPipeline", "vae": ["diffusers", "AutoencoderKLWan"]}, indent=2)
    )
    return str(out_dir)
