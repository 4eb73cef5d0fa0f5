"""What a multiple-choice option costs under ``--protocol loglikelihood``: questions/s for 2- and 4-option questions,
the path before (every option a full sequence: its image through the world and image encoders and the prompt
again) and now (``theworld.evaluate.option_log_likelihoods``: the prompt once, its KV cache shared by the options),
side by side in one process on the demo's tiny model (CPU).

Each JSON line: ``{"path", "options", "questions", "seconds", "questions_per_second"}``, then per path
``{"path", "cost_ratio_4_to_2"}``: the time of a 4-option question over a 2-option one (1.0: options are free).

    python bench/option_cost.py [--questions 64] [--batch_size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from theworld import TheWorld
from theworld.benchmarks import Question
from theworld.evaluate import option_log_likelihoods
from theworld.loss import IGNORE_INDEX
from theworld.prompts import multiple_choice_prompt, option_letters
from theworld.testing.tiny import write_tiny_cosmos, write_tiny_gemma

CHOICES = ["the left one", "the right one", "the top one", "the bottom one"]


def per_option_sequences(model, processor, questions, world_images=None):
    """The path before: one sequence per option (prompt, image and world block repeated), the option's tokens
    scored after it."""
    world_images = world_images or [q.images for q in questions]
    examples = [
        processor(q.images, caption=option, prompt=q.prompt, world_image=world)
        for q, world in zip(questions, world_images, strict=True)
        for option in q.options
    ]
    batch = processor.collate(examples)
    inputs = {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}
    hidden = model.hidden_states(inputs["input_ids"], inputs["segment_ids"], inputs["attention_mask"],
                                 inputs.get("pixel_values"), inputs.get("world_pixels"))
    positions, targets = inputs["label_positions"], inputs["label_targets"]
    log_probs = model.gemma.lm_head(hidden.flatten(0, 1).index_select(0, positions)).float().log_softmax(-1)
    scored = (targets != IGNORE_INDEX) & (targets != processor.end_of_turn_id)
    token_scores = log_probs.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1) * scored
    return list(token_scores.view(len(examples), -1).sum(1).split([len(q.options) for q in questions]))


def questions(count: int, options: int) -> list[Question]:
    return [Question(str(n), "Size", None, (Image.new("RGB", (96, 96), (n * 37 % 256, n * 91 % 256, 120)),),
                     multiple_choice_prompt("Which shape is larger?", CHOICES[:options]), option_letters(options),
                     ["(A)"], "Size") for n in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings per cell")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as root:
        gemma, cosmos = write_tiny_gemma(Path(root) / "gemma"), write_tiny_cosmos(Path(root) / "cosmos")
        model = TheWorld(gemma, cosmos, world_image_size=64, world_patch_size=2, projector_hidden_dim=256).eval()
        paths = {"before: a sequence per option": per_option_sequences, "now: prompt once, shared KV cache":
                 option_log_likelihoods}
        with torch.inference_mode():
            for score in paths.values():  # first-call costs, untimed
                score(model, model.processor, questions(2, 4))
            seconds: dict[tuple[str, int], float] = {}
            for options in (2, 4):
                asked = questions(args.questions, options)
                for name, score in paths.items():
                    timings = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        for first in range(0, len(asked), args.batch_size):
                            score(model, model.processor, asked[first : first + args.batch_size])
                        timings.append(time.perf_counter() - start)
                    seconds[(name, options)] = min(timings)
                    print(json.dumps({"path": name, "options": options, "questions": args.questions,
                                      "seconds": round(seconds[(name, options)], 3),
                                      "questions_per_second": round(args.questions / seconds[(name, options)], 1)}),
                          flush=True)
        for name in paths:
            print(json.dumps({"path": name, "cost_ratio_4_to_2": round(seconds[(name, 4)] / seconds[(name, 2)], 3)}))


if __name__ == "__main__":
    main()
