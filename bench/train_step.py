"""Training-step speed and memory at real size, against the bare Gemma 3 step, in one run.

Builds Gemma3-4B (hidden 2560, 34 layers, 8 heads / 4 KV heads, head_dim 256, vocab 262208,
sliding window 1024; SigLIP 1152 x 27 layers at 896 px, patch 14) and the Wan2.1 VAE (diffusers
defaults) from configs with random bf16 weights -- nothing is downloaded -- and times real
``Trainer.fit`` steps of ``TheWorldModule`` (projection-only, bf16-mixed) at

- the reference shape: world 512 / patch 1 (4096 world tokens), batch 2, ~5076 tokens a sample;
- the default shape: world 448 / patch 2 (784 world tokens), batch 8;

and, at the same reference length, the bare Gemma step: language-model forward + backward to the
input embeddings with frozen weights and logits only at labelled positions. Each figure is the
median of ``--steps`` steps after ``--warmup``. Prints one JSON line per measurement; the last line
is one JSON object with all of them and the device name.

Runs (``--runs``): ``reference``, ``reference_ckpt`` (gradient checkpointing), ``reference_compile``
(``--model.compile``: Gemma's decoder layers through torch.compile), ``reference_cached`` (world
tokens from a latent cache instead of the VAE), ``default`` (+ the batch search).
On a GPU each TheWorld run also counts the implicit host syncs of a training step
(``torch.cuda.set_sync_debug_mode``): ``syncs_per_step``.

    python bench/train_step.py                 # on a CUDA GPU
    python bench/train_step.py --runs reference reference_compile
    python bench/train_step.py --tiny          # CPU smoke run with the tiny test models
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image

from theworld.config import TheWorldConfig
from theworld.data.processing import IGNORE_INDEX, TheWorldProcessor, load_gemma_processor
from theworld.lit.module import TheWorldModule
from theworld.model import TheWorld
from theworld.testing.tiny import write_tiny_cosmos, write_tiny_gemma
from theworld.world import WorldEncoder

REFERENCE_TOKENS = 5076
GiB = 2**30


def gemma3_4b_config(tokenizer):
    from transformers import Gemma3Config

    ids = tokenizer.convert_tokens_to_ids
    return Gemma3Config(
        text_config=dict(
            vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=1024,
            query_pre_attn_scalar=256, max_position_embeddings=131072,
            pad_token_id=ids("<pad>"), bos_token_id=ids("<bos>"), eos_token_id=ids("<eos>"),
        ),
        vision_config=dict(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
            image_size=896, patch_size=14, vision_use_head=False,
        ),
        mm_tokens_per_image=256,
        boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )


def build_base(tmp: Path, tiny: bool, device: torch.device):
    """(processor_dir, gemma, vae): random weights at real size, or the tiny test models."""
    from diffusers import AutoencoderKLWan
    from transformers import Gemma3ForConditionalGeneration

    if tiny:
        gemma_dir, cosmos_dir = write_tiny_gemma(tmp / "gemma"), write_tiny_cosmos(tmp / "cosmos")
        return gemma_dir, Gemma3ForConditionalGeneration.from_pretrained(gemma_dir), \
            AutoencoderKLWan.from_pretrained(cosmos_dir, subfolder="vae")
    # Only the processor files of this folder are used: real-size SigLIP preprocessing, 256 image tokens.
    gemma_dir = write_tiny_gemma(tmp / "processor", image_size=896, patch_size=14, mm_tokens_per_image=256)
    tokenizer = load_gemma_processor(gemma_dir).tokenizer
    with torch.device(device):
        gemma = Gemma3ForConditionalGeneration._from_config(
            gemma3_4b_config(tokenizer), dtype=torch.bfloat16, attn_implementation="sdpa"
        ).to(device)
        vae = AutoencoderKLWan().to(device, torch.bfloat16)
    vae.decoder = None  # as WorldEncoder.from_pretrained does
    vae.post_quant_conv = None
    return gemma_dir, gemma.eval(), vae


def make_batches(processor: TheWorldProcessor, batch_size: int, target_tokens: int | None):
    """One collated batch, repeated: a caption long enough to reach ``target_tokens`` a sample."""
    image = Image.new("RGB", (256, 256), (200, 40, 40))
    prompt_len = len(processor(image)["input_ids"])
    caption_tokens = max(8, (target_tokens or prompt_len + 32) - prompt_len - 1)
    processor.max_caption_tokens = caption_tokens
    caption = " ".join(["a red circle on a blue background"] * (caption_tokens // 4 + 1))
    batch = processor.collate([processor(image, caption=caption) for _ in range(batch_size)])
    keys = [f"bench-{i}" for i in range(batch_size)]  # what the provenance records, as from the loader
    return {**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}, "key": keys}


class StepTimer(L.Callback):
    """Times each step after the warm-up; on a GPU also counts the implicit host syncs inside them."""

    def __init__(self, warmup: int):
        self.warmup, self.times, self._start = warmup, [], 0.0
        self.syncs = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            if batch_idx == self.warmup:
                torch.cuda.reset_peak_memory_stats()
            if batch_idx >= self.warmup:
                torch.cuda.set_sync_debug_mode("warn")
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._start)


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / GiB if torch.cuda.is_available() else 0.0


def time_theworld(name, gemma, vae, processor_dir, *, image_size, patch, batch_size, target_tokens, checkpointing,
                  args, device, compile=False, cached_latents=False) -> dict:
    config = TheWorldConfig(gemma_model_name=processor_dir, world_image_size=image_size, world_patch_size=patch,
                            gradient_checkpointing=checkpointing)
    if checkpointing:
        gemma.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        gemma.gradient_checkpointing_disable()
    encoder = WorldEncoder(vae, patch).to(device)
    module = TheWorldModule(gemma_model_name=processor_dir, world_image_size=image_size, world_patch_size=patch,
                            learning_rate=1e-4, warmup_steps=1, compile=compile)
    module.model = TheWorld.from_modules(config, gemma, encoder)
    batch = make_batches(module.model.processor, batch_size, target_tokens)
    if cached_latents:  # what a latent cache hands the step instead of the VAE input
        with torch.no_grad():
            pixels = module.model.processor.normalize(dict(batch))["world_pixels"].to(device)
            batch["world_latents"] = encoder(pixels).to(torch.bfloat16).cpu()
        del batch["world_pixels"]
    steps = args.warmup + args.steps
    loader = torch.utils.data.DataLoader([batch] * steps, batch_size=None, pin_memory=device.type == "cuda")
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        default_root_dir=Path(processor_dir).parent,  # the run's data_yield.json goes to the temporary folder
        accelerator=device.type, devices=1, precision="bf16-mixed" if device.type == "cuda" else "32-true",
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, loader)
    syncs = sum("synchronizing" in str(w.message) for w in caught)
    step = statistics.median(timer.times)
    tokens = batch["input_ids"].numel()
    result = {"name": name, "step_s": round(step, 4), "tokens_per_s": round(tokens / step, 1),
              "peak_gib": round(peak_gib(), 2), "batch": batch_size, "seq_len": batch["input_ids"].shape[1],
              "labelled": int((batch["labels"][0] != IGNORE_INDEX).sum())}
    if device.type == "cuda":
        result["syncs_per_step"] = round(syncs / len(timer.times), 2)
    for layer in gemma.model.language_model.layers:  # the next runs measure eager layers again
        layer._compiled_call_impl = None
    module.model = None
    return result


def time_bare_gemma(name, gemma, *, batch_size, seq_len, labelled, checkpointing, args, device) -> dict:
    """Gemma language model forward + backward to the input embeddings; logits only where labelled."""
    gemma.to(device)  # Trainer.fit moves its module back to the CPU when it ends
    if checkpointing:
        gemma.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        gemma.gradient_checkpointing_disable()
    gemma.train()  # checkpointing is only active in train mode; there is no dropout
    hidden = gemma.config.text_config.hidden_size
    dtype = next(gemma.parameters()).dtype
    labels = torch.full((batch_size, seq_len), IGNORE_INDEX, device=device)
    vocab = gemma.config.text_config.vocab_size
    labels[:, -labelled:] = torch.randint(0, vocab, (batch_size, labelled), device=device)
    times = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        embeds = torch.randn(batch_size, seq_len, hidden, device=device, dtype=dtype, requires_grad=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = gemma.model.language_model(inputs_embeds=embeds).last_hidden_state
        targets = labels[:, 1:]
        selected = targets != IGNORE_INDEX
        loss = F.cross_entropy(gemma.lm_head(out[:, :-1][selected]).float(), targets[selected])
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    gemma.eval()
    step = statistics.median(times)
    return {"name": name, "step_s": round(step, 4), "tokens_per_s": round(batch_size * seq_len / step, 1),
            "peak_gib": round(peak_gib(), 2), "batch": batch_size, "seq_len": seq_len}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny test models")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", nargs="*",
                        default=["reference", "reference_ckpt", "reference_compile", "reference_cached", "default"],
                        help="which measurements: reference, reference_ckpt, reference_compile, reference_cached, "
                             "default (+ batch search)")
    parser.add_argument("--batch-search", type=int, nargs="*", default=[16, 24, 32, 48],
                        help="default-shape batch sizes to try for the largest that fits in 80 GiB")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.warmup, args.batch_search = min(args.steps, 3), 1, []
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    torch.manual_seed(0)
    results: dict[str, dict] = {}

    def record(result: dict) -> None:
        results[result["name"]] = result
        print(json.dumps({**result, "device": device_name}), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        processor_dir, gemma, vae = build_base(Path(tmp), args.tiny, device)
        gemma.requires_grad_(False)
        ref_size, ref_tokens = (512, REFERENCE_TOKENS) if not args.tiny else (64, None)
        variants = {"reference": dict(checkpointing=False), "reference_ckpt": dict(checkpointing=True),
                    "reference_compile": dict(checkpointing=False, compile=True),
                    "reference_cached": dict(checkpointing=False, cached_latents=True)}
        bare_runs: dict[bool, dict] = {}
        for run, options in variants.items():
            if run not in args.runs:
                continue
            world = time_theworld(f"theworld_{run}", gemma, vae, processor_dir, image_size=ref_size, patch=1,
                                  batch_size=2, target_tokens=ref_tokens, args=args, device=device, **options)
            record(world)
            ckpt = options["checkpointing"]
            if ckpt not in bare_runs:  # one eager bare step per checkpointing setting is the baseline
                bare_runs[ckpt] = time_bare_gemma(
                    f"bare_gemma_reference{'_ckpt' if ckpt else ''}", gemma, batch_size=2, seq_len=world["seq_len"],
                    labelled=world["labelled"], checkpointing=ckpt, args=args, device=device)
                record(bare_runs[ckpt])
            world["ratio_to_bare"] = round(world["step_s"] / bare_runs[ckpt]["step_s"], 3)
        default_size = 448 if not args.tiny else 64
        fits = None
        if "default" not in args.runs:
            args.batch_search = []
        else:
            record(time_theworld("theworld_default_b8", gemma, vae, processor_dir, image_size=default_size, patch=2,
                                 batch_size=8, target_tokens=None, checkpointing=False, args=args, device=device))
            fits = 8 if results["theworld_default_b8"]["peak_gib"] <= 80 else None
        for batch_size in args.batch_search:
            try:
                result = time_theworld(f"theworld_default_b{batch_size}", gemma, vae, processor_dir,
                                       image_size=default_size, patch=2, batch_size=batch_size, target_tokens=None,
                                       checkpointing=False, args=args, device=device)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
            record(result)
            if result["peak_gib"] > 80:
                break
            fits = batch_size
    summary = {"device": device_name, "date": time.strftime("%Y-%m-%d"), "largest_default_batch_in_80gib": fits,
               **{f"{name}.{k}": v for name, r in results.items() for k, v in r.items() if k != "name"}}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
