"""``theworld estimate`` against the H200 rows of ``bench/RESULTS.md``: prediction, measurement, ratio.

Each measured run is replayed under fake tensors at its exact shape (``bench/train_step.py``'s batches: the
tiny processor's prompt, so 26 text tokens). Those rows were measured before the chunked loss head, with full
labelled-row logits and ``F.cross_entropy``: the replay uses that head too. MFU is FLOPs of the step (as
FlopCounterMode counts them) / (step time x 989.4 TFLOP/s); the best row's MFU is what the estimate assumes
(``theworld.estimate.BEST_MFU``), so its time prediction is fitted and the others are held out.

    python bench/estimate_check.py
"""

from __future__ import annotations

import json
from unittest import mock

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from theworld import model as model_module
from theworld.config import TheWorldConfig
from theworld.estimate import GPUS, LiveBytes, StepShape, build_weightless, step_flops, step_memory

GiB = 2**30
TEXT_TOKENS = 26 + 256  # the bench's prompt: the tiny tokenizer's chat template + Gemma's image block
# name, world_image_size, world_patch_size, batch, seq_len, checkpointing, measured step s, measured peak GiB
ROWS = [
    ("TheWorld reference (B=2 x 5076)", 512, 1, 2, 5076, False, 0.790, 58.3),
    ("TheWorld reference + checkpointing", 512, 1, 2, 5076, True, 1.054, 14.51),
    ("TheWorld default B=8 (x 1100)", 448, 2, 8, 1100, False, 0.659, 47.3),
    ("TheWorld default B=16 (x 1100)", 448, 2, 16, 1100, False, 1.294, 86.3),
]
BARE = ("bare Gemma step (B=2 x 5076)", 2, 5076, 0.701, 57.2)


def full_logits_head(rows, weight, targets, *args, **kwargs):
    """The loss head of the measured runs: full bf16 logits of the labelled rows, then cross-entropy in fp32."""
    logits = rows @ weight.t()
    return F.cross_entropy(logits.float(), targets), torch.tensor(targets.numel())


def replay(name, size, patch, batch, seq_len, ckpt):
    world_tokens = (size // 8 // patch) ** 2 + 2
    shape = StepShape(batch, seq_len, seq_len - world_tokens - TEXT_TOKENS)
    fake_mode = FakeTensorMode()
    world = build_weightless(TheWorldConfig(world_image_size=size, world_patch_size=patch), fake_mode)
    with mock.patch.object(model_module, "linear_cross_entropy", full_logits_head):
        memory = step_memory(world, fake_mode, shape, checkpointing=ckpt)
        flops = step_flops(world, fake_mode, StepShape(1, seq_len, shape.labelled), checkpointing=ckpt) * batch
    return memory.peak, flops, shape


def replay_bare(batch, seq_len, labelled):
    """bench/train_step.py's bare step: the language model to its input embeddings, logits at labelled rows."""
    fake_mode = FakeTensorMode()
    gemma = build_weightless(TheWorldConfig(enable_world=False), fake_mode).gemma
    gemma.requires_grad_(False)
    gemma.gradient_checkpointing_disable()
    with fake_mode:
        live = LiveBytes()
        for tensor in [*gemma.parameters(), *gemma.buffers()]:
            live.add(tensor)
        embeds = torch.zeros(batch, seq_len, gemma.config.text_config.hidden_size, dtype=torch.bfloat16,
                             requires_grad=True)
        rows = torch.zeros(batch * labelled, dtype=torch.long)
        with live:
            hidden = gemma.model.language_model(inputs_embeds=embeds).last_hidden_state
            logits = gemma.lm_head(hidden.flatten(0, 1).index_select(0, rows))
            F.cross_entropy(logits.float(), rows).backward()
    return live.peak


def main() -> None:
    peak_tflops = GPUS["h200"].bf16_tflops * 1e12
    results = []
    for name, size, patch, batch, seq_len, ckpt, step_s, peak_gib in ROWS:
        peak, flops, shape = replay(name, size, patch, batch, seq_len, ckpt)
        results.append({"run": name, "predicted_gib": round(peak / GiB, 2), "measured_gib": peak_gib,
                        "ratio": round(peak / GiB / peak_gib, 3), "step_tflop": round(flops / 1e12, 2),
                        "measured_step_s": step_s, "mfu": round(flops / step_s / peak_tflops, 4)})
        print(json.dumps(results[-1]), flush=True)
    name, batch, seq_len, step_s, peak_gib = BARE
    peak = replay_bare(batch, seq_len, labelled=seq_len - (512 // 8) ** 2 - 2 - TEXT_TOKENS)
    results.append({"run": name, "predicted_gib": round(peak / GiB, 2), "measured_gib": peak_gib,
                    "ratio": round(peak / GiB / peak_gib, 3)})
    print(json.dumps(results[-1]), flush=True)
    best = max((r for r in results if "mfu" in r), key=lambda r: r["mfu"])
    for r in results:
        if "mfu" in r:
            r["predicted_step_s_at_best_mfu"] = round(r["step_tflop"] * 1e12 / (best["mfu"] * peak_tflops), 3)
            r["time_ratio"] = round(r["predicted_step_s_at_best_mfu"] / r["measured_step_s"], 3)
    print(json.dumps({"best_mfu": best["mfu"], "best_mfu_run": best["run"], "rows": results}), flush=True)


if __name__ == "__main__":
    main()
