"""`theworld evaluate`: benchmarks read in their published schemas, options scored by log-likelihood, the world
ablations really ablating, bootstrap intervals, and the command end to end."""

import csv
import itertools
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
import torch
from datasets import Features, Sequence, Value
from datasets import Image as ImageFeature
from huggingface_hub import HfApi
from safetensors.torch import save_file
from support.accounts import ALICE
from support.benchmark_folders import (
    BLINK_FEATURES,
    VQA_FEATURES,
    blink_folder,
    blink_rows,
    blink_test_rows,
    cv_bench_folder,
    cv_bench_row,
    hand_total,
    picture,
    write_hub_folder,
    write_config,
    write_hub_splits,
)
from support.cli_runs import REPO, theworld
from support.hub_cli import workdir

from theworld import TheWorld
from theworld.benchmarks import Benchmark, load_benchmark, load_benchmarks
from theworld.benchmarks.formats import leading_letter, letter_decided
from theworld.data.processing import SEG_IMAGE, SEG_WORLD, SEG_WORLD_START
from theworld.errors import UserError
from theworld.evaluate import (
    BOOTSTRAP_SAMPLES,
    SampleResult,
    check_conditions,
    derangement,
    evaluate_benchmarks,
    normalize_answer,
    option_log_likelihoods,
    paired_bootstrap_interval,
    summarise,
    wilson_interval,
)


@pytest.fixture(scope="module")
def model(tiny_models):
    gemma, cosmos = tiny_models
    torch.manual_seed(0)
    return TheWorld(gemma, cosmos, world_image_size=64).eval()


# ------------------------------------------------------------------------------------------------- reading
# Reading a local folder: tests/unit/test_benchmark_loaders.py

READ_FROM_THE_HUB = """
import json, sys
from theworld.benchmarks import load_benchmarks
print(json.dumps([[b.config, b.split, b.format, [q.answers[0] for q in b.questions], b.skipped]
                  for b in load_benchmarks(sys.argv[1])]))
"""


def test_a_benchmark_given_as_a_hub_id_is_read_from_the_hub_as_from_its_folder(tmp_path, hub):
    """The production path of `--benchmark BLINK-Benchmark/BLINK`: datasets resolves the id on the Hub (here the local
    one: HF_ENDPOINT), reads the configs from the card and the parquet files of the repo."""
    folder = blink_folder(tmp_path / "blink")
    api = HfApi(endpoint=hub.url, token=ALICE)
    api.create_repo("alice/blink", repo_type="dataset")
    api.upload_folder(folder_path=folder, repo_id="alice/blink", repo_type="dataset")
    read = subprocess.run([sys.executable, "-c", READ_FROM_THE_HUB, "alice/blink"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": ALICE,
                                            "HF_HOME": str(tmp_path / "hf_home")})
    assert read.returncode == 0, read.stderr[-3000:]
    local = [[b.config, b.split, b.format, [q.answers[0] for q in b.questions], b.skipped]
             for b in load_benchmarks(str(folder))]
    assert json.loads(read.stdout.strip().splitlines()[-1]) == local
    assert [(row[0], len(row[3])) for row in local] == [("Relative_Depth", 5), ("Spatial_Relation", 4)]


# ------------------------------------------------------------------------------------------------- scoring
def direct_option_score(model, question, option) -> float:
    """The option's log-likelihood from one sequence's full logits: the textbook computation."""
    proc = model.processor
    batch = proc.collate([proc(question.images, caption=option, prompt=question.prompt)])
    with torch.no_grad():
        logits = model(**batch, return_logits=True)["logits"][0].float()
    labels = batch["labels"][0]
    option_ids = proc.tokenizer(option, add_special_tokens=False)["input_ids"]
    start = int((labels != -100).nonzero()[0])
    log_probs = logits.log_softmax(-1)
    return sum(float(log_probs[start + i - 1, token]) for i, token in enumerate(option_ids))


def test_batched_option_scores_equal_the_direct_computation_whatever_the_batch_and_padding(model, tmp_path):
    questions = load_benchmark(str(blink_folder(tmp_path / "blink")), "Relative_Depth").questions[:3]
    assert len({len(q.prompt) for q in questions}) > 1  # prompts of different lengths: rows are padded
    with torch.no_grad():
        together = option_log_likelihoods(model, model.processor, questions)
        alone = [option_log_likelihoods(model, model.processor, [q])[0] for q in questions]
    for question, batched, single in zip(questions, together, alone, strict=True):
        direct = torch.tensor([direct_option_score(model, question, option) for option in question.options])
        assert torch.allclose(batched, direct, atol=1e-4), (batched, direct)
        assert torch.allclose(batched, single, atol=1e-4)


def test_open_questions_are_generated_and_matched_after_normalisation(model, tmp_path, monkeypatch):
    rows = [{"image": picture(n), "question": f"What is shown ({n})?", "answer": answer}
            for n, answer in enumerate(["two red circles", "a square", "blue"])]
    bench = load_benchmark(str(write_hub_folder(tmp_path / "vqa", "test", {"shapes": (rows, VQA_FEATURES)})), "shapes")
    prompts = []

    def generate(batch, max_new_tokens, answered=None):
        prompts.append(model.processor.tokenizer.decode(batch["input_ids"][0]))
        return ["The 2 red circles.", "a circle", "Blue"][:len(batch["input_ids"])]

    monkeypatch.setattr(model, "generate_from_batch", generate)
    result = evaluate_benchmarks(model, [bench], ["full"], batch_size=3, bootstrap_samples=10)
    assert [(s.predicted, s.correct) for s in result.samples] == [
        ("The 2 red circles.", True), ("a circle", False), ("Blue", True)]
    assert "What is shown (0)?" in prompts[0]
    assert result.accuracies[0].accuracy == pytest.approx(2 / 3)


def test_the_official_protocol_asks_the_datasets_prompt_and_reads_the_leading_letter(model, tmp_path, monkeypatch):
    rows = blink_rows("Counting", 4)  # answers (B), (A), (B), (A)
    rows[0]["prompt"] = "Count the floats.\nSelect from the following choices.\n(A) A is closer\n(B) B is closer"
    bench = load_benchmark(str(write_hub_folder(tmp_path / "blink", "val", {"Counting": (rows, BLINK_FEATURES)})),
                           "Counting")
    prompts = []

    def generate(batch, max_new_tokens, answered=None):
        prompts.extend(model.processor.tokenizer.batch_decode(batch["input_ids"]))
        return ["(B) B is closer", "a", "I think (B)", "C"]

    monkeypatch.setattr(model, "generate_from_batch", generate)
    result = evaluate_benchmarks(model, [bench], ["full"], batch_size=4, bootstrap_samples=100)
    # lmms-eval's reading: the letter the answer starts with, if it is an option ("I" and "C" are not).
    assert [(s.response, s.predicted, s.correct) for s in result.samples] == [
        ("(B) B is closer", "(B)", True), ("a", "(A)", True), ("I think (B)", "", False), ("C", "", False)]
    assert "Count the floats.\nSelect from the following choices." in prompts[0]
    assert result.protocol == "official" and set(result.metrics()) == {"eval/official/Counting/full",
                                                                       "eval/official/all/full"}
    assert "protocol official: BLINK: the dataset's prompt, a generated answer, its leading letter" in result.table()
    assert "all: mean of the task accuracies (BLINK's total)" in result.table()


def test_generation_stops_once_the_letter_is_decided_and_reads_the_same_answer(model, tmp_path):
    questions = load_benchmark(str(blink_folder(tmp_path / "blink", count=4)), "Relative_Depth").questions
    proc = model.processor
    batch = proc.collate([proc(q.images, prompt=q.prompt) for q in questions], padding_side="left")
    whole = model.generate_from_batch(batch, 12)
    stopped = model.generate_from_batch(batch, 12, answered=letter_decided)
    for question, text, short in zip(questions, whole, stopped, strict=True):
        assert text.startswith(short) and leading_letter(short, question) == leading_letter(text, question)
    assert sum(map(len, stopped)) < sum(map(len, whole))  # the untrained model's long answers were cut


def test_a_test_split_with_hidden_answers_gives_predictions_and_the_submission_file(model, tmp_path, monkeypatch):
    folder = write_hub_splits(tmp_path / "blink", {"Counting": {
        "val": (blink_rows("Counting", 2), BLINK_FEATURES), "test": (blink_test_rows("Counting", 2), BLINK_FEATURES)}})
    hidden = load_benchmark(str(folder), "Counting", "test")
    monkeypatch.setattr(model, "generate_from_batch", lambda batch, max_new_tokens, answered: ["(B)", "A."])
    result = evaluate_benchmarks(model, [hidden], ["full", "shuffled_world"], bootstrap_samples=100)
    assert result.accuracies == [] and result.world_gains == [] and result.predictions_only == ["Counting"]
    assert {s.correct for s in result.samples} == {None}
    # BLINK's server takes {idx: prediction} (BLINK_Benchmark's eval/evaluate.py).
    assert json.loads(result.submission()) == {"test_Counting_1": "(B)", "test_Counting_2": "(A)"}
    assert "Counting: answers hidden (a test split): predictions only, no accuracy" in result.table()


def test_a_task_with_no_usable_question_is_reported_and_the_others_run(model, tmp_path):
    imageless = [{**row, "image_1": None} for row in blink_rows("Counting", 2)]
    folder = write_hub_folder(tmp_path / "blink", "val", {
        "Counting": (imageless, BLINK_FEATURES),
        "Relative_Depth": (blink_rows("Relative_Depth", 2), BLINK_FEATURES),
        "Spatial_Relation": (blink_rows("Spatial_Relation", 1), BLINK_FEATURES)})
    benches = load_benchmarks(str(folder))
    result = evaluate_benchmarks(model, benches, ["full", "shuffled_world"], bootstrap_samples=100)
    assert result.empty_tasks == {"Counting": "no usable question (2 questions without an image)"}
    assert "Counting: no usable question (2 questions without an image)" in result.table()
    shuffled = {a.task: a.n for a in result.accuracies if a.condition == "shuffled_world"}
    assert shuffled == {"Relative_Depth": 2, "Spatial_Relation": 1, "all": 3}  # one question: still its row


def test_normalised_matching_and_derangements():
    assert normalize_answer("The Two red cats.") == normalize_answer("2 red cats") == "2 red cats"
    assert normalize_answer("a circle") != normalize_answer("a square")
    for count in range(2, 12):
        donor = derangement(count, seed=count)
        assert sorted(donor) == list(range(count)) and all(donor != np.arange(count))
    assert np.array_equal(derangement(9, seed=3), derangement(9, seed=3))


def right_and_wrong(config, task, stratum, n, right_full, right_shuffled):
    """``n`` questions of ``task``: full right on the first ``right_full``, shuffled_world on the first
    ``right_shuffled``."""
    return [SampleResult(f"{task}_{i}", config, task, None, condition, "(A)", "(A)", i < right, stratum=stratum)
            for condition, right in (("full", right_full), ("shuffled_world", right_shuffled)) for i in range(n)]


def test_blinks_total_is_the_mean_over_its_tasks_not_the_pooled_share():
    # Depth: 10 questions, full right on 9, shuffled on 5; Jigsaw: 30 questions, 12 and 12.
    samples = (right_and_wrong("Depth", "Depth", "Depth", 10, 9, 5)
               + right_and_wrong("Jigsaw", "Jigsaw", "Jigsaw", 30, 12, 12))
    benches = [Benchmark("BLINK-Benchmark/BLINK", task, "val", "blink", []) for task in ("Depth", "Jigsaw")]
    accuracies, gains = summarise(samples, benches, seed=0)
    total = {a.condition: a for a in accuracies if a.task == "all"}
    assert total["full"].accuracy == pytest.approx((9 / 10 + 12 / 30) / 2)  # 65%; pooled would be 21/40
    assert total["shuffled_world"].accuracy == pytest.approx((5 / 10 + 12 / 30) / 2)
    assert (total["full"].n, total["full"].config, total["full"].split) == (40, None, "val")
    gain = {g.task: g for g in gains}
    assert gain["all"].gain == pytest.approx(0.65 - 0.45) and gain["Depth"].gain == pytest.approx(0.4)
    assert gain["Jigsaw"].gain == 0 and gain["Jigsaw"].ci == (0.0, 0.0)  # the same answers: no difference at all
    assert 0 < gain["all"].ci[0] < 0.2 < gain["all"].ci[1]


def test_cv_benchs_total_weighs_the_sources_as_published():
    # ADE20K 3 of 4, COCO 0 of 2 (2D), Omni3D 2 of 5 (3D).
    samples = (right_and_wrong("2D", "Count", "ADE20K", 4, 3, 0) + right_and_wrong("2D", "Relation", "COCO", 2, 0, 0)
               + right_and_wrong("3D", "Depth", "Omni3D", 5, 2, 0))
    benches = [Benchmark("nyu-visionx/CV-Bench", config, "test", "cv-bench", []) for config in ("2D", "3D")]
    accuracies, _ = summarise(samples, benches, seed=0)
    total = next(a for a in accuracies if a.task == "all" and a.condition == "full")
    assert total.accuracy == pytest.approx(1 / 2 * ((3 / 4 + 0 / 2) / 2 + 2 / 5))  # 38.75%; pooled: 5/11
    # 2D alone: (ADE20K + COCO) / 2.
    accuracies, _ = summarise(samples[:12], benches[:1], seed=0)
    assert next(a for a in accuracies if a.task == "all" and a.condition == "full").accuracy == pytest.approx(0.375)


def test_accuracy_intervals_are_wilsons_and_do_not_collapse_at_0_or_100_percent():
    z = 1.959963984540054
    assert wilson_interval(1.0, 30) == pytest.approx((30 / (30 + z * z), 1.0))  # closed form at 100%
    assert wilson_interval(0.0, 30) == pytest.approx((0.0, z * z / (30 + z * z)))
    low, high = wilson_interval(0.8, 100)
    assert (low, high) == (pytest.approx(0.7112, abs=1e-4), pytest.approx(0.8666, abs=1e-4))  # the textbook figures
    samples = right_and_wrong("Depth", "Depth", "Depth", 20, 20, 0) + right_and_wrong("Left", "Left", "Left", 20, 20, 0)
    benches = [Benchmark("toy", task, "val", "blink", []) for task in ("Depth", "Left")]
    accuracies, _ = summarise(samples, benches, seed=0)
    for accuracy in accuracies:
        assert accuracy.ci[1] - accuracy.ci[0] > 0.05, accuracy


def test_the_gains_paired_bootstrap_draws_10000_resamples_as_resampling_the_questions_would():
    rng = np.random.default_rng(5)
    differences = rng.choice([-1.0, 0.0, 1.0], size=80, p=[0.1, 0.6, 0.3])
    low, high = paired_bootstrap_interval([differences], [1.0], seed=0)
    # The textbook resampling of question indices, as many times.
    draws = np.random.default_rng(1).integers(0, 80, size=(10_000, 80))
    ref_low, ref_high = np.percentile(differences[draws].mean(axis=1), [2.5, 97.5])
    assert abs(low - ref_low) < 0.015 and abs(high - ref_high) < 0.015
    assert paired_bootstrap_interval([differences], [1.0], seed=3) == paired_bootstrap_interval(
        [differences], [1.0], seed=3)
    assert BOOTSTRAP_SAMPLES == 10_000
    # Paired: the gain's interval is narrower than the two accuracies' intervals would make it.
    samples = right_and_wrong("Depth", "Depth", "Depth", 100, 80, 50)
    accuracies, (gain, _) = summarise(samples, [Benchmark("toy", "Depth", "val", "blink", [])], seed=0)
    assert gain.gain == pytest.approx(0.3) and 0.15 < gain.ci[0] < 0.3 < gain.ci[1] < 0.45
    full_ci, shuffled_ci = (next(a.ci for a in accuracies if a.condition == c and a.task == "Depth")
                            for c in ("full", "shuffled_world"))
    assert (full_ci[1] - shuffled_ci[0]) - (full_ci[0] - shuffled_ci[1]) > gain.ci[1] - gain.ci[0]


# ------------------------------------------------------------------------------------------------- ablations
class WorldSpy:
    """Records what reaches the model: per forward, the world pixels, whether world slots were in it, the segment ids
    and the embeddings built; what the VAE (the world encoder) and SigLIP (Gemma's image encoder) were given."""

    def __init__(self, model, monkeypatch):
        self.world_pixels, self.world_slots, self.segments, self.embeds = [], [], [], []
        self.vae_inputs, self.siglip_inputs = [], []
        embed = model.embed

        def spying_embed(input_ids, segment_ids, pixel_values=None, world_pixels=None, world_latents=None):
            self.world_pixels.append(None if world_pixels is None else world_pixels.clone())
            self.world_slots.append(bool(((segment_ids == SEG_WORLD) | (segment_ids == SEG_WORLD_START)).any()))
            self.segments.append(segment_ids.clone())
            self.embeds.append(embed(input_ids, segment_ids, pixel_values, world_pixels, world_latents))
            return self.embeds[-1]

        monkeypatch.setattr(model, "embed", spying_embed)
        if model.world_encoder is not None:
            vae = model.world_encoder.forward
            monkeypatch.setattr(model.world_encoder, "forward",
                                lambda images: self.vae_inputs.append(images.clone()) or vae(images))
        siglip = model.gemma.model.get_image_features
        monkeypatch.setattr(model.gemma.model, "get_image_features", lambda pixel_values, *a, **k: (
            self.siglip_inputs.append(pixel_values.clone()) or siglip(pixel_values, *a, **k)))


def blocks_in_order(segments: torch.Tensor) -> list[int]:
    """One row's world blocks and Gemma image blocks in their order: SEG_WORLD or SEG_IMAGE per contiguous run."""
    return [segment for segment in torch.unique_consecutive(segments).tolist() if segment in (SEG_WORLD, SEG_IMAGE)]


@pytest.mark.parametrize("protocol", ["official", "loglikelihood"])
def test_each_image_of_a_question_has_its_own_world_block_and_image_block_in_order(model, tmp_path, monkeypatch,
                                                                                   protocol):
    rows = blink_rows("Art_Style", 1, multi_image=2, images=3)  # questions of 1, 3 and 3 images, all different
    bench = load_benchmark(str(write_hub_folder(tmp_path / "blink", "val", {"Art_Style": (rows, BLINK_FEATURES)})),
                           "Art_Style")
    proc = model.processor
    with torch.no_grad():  # each image's own world tokens, encoded alone
        own = [[model.encode_world(proc.world_pixels(image)[None])[0] for image in q.images] for q in bench.questions]
    for tokens in own:  # different images, different world tokens: a block with another image's could not pass
        assert all(not torch.allclose(a, b, atol=1e-3) for a, b in itertools.combinations(tokens, 2))
    spy = WorldSpy(model, monkeypatch)
    result = evaluate_benchmarks(model, [bench], ["full"], batch_size=3, bootstrap_samples=10, max_new_tokens=2,
                                 protocol=protocol)
    assert len(result.samples) == 3
    # One forward over the three prompts (options and generated tokens continue its cache): each image encoded once,
    # by the VAE and by SigLIP, in the questions' and images' order.
    (segments,), (embeds,), (vae_input,), (siglip_input,) = spy.segments, spy.embeds, spy.vae_inputs, spy.siglip_inputs
    images = [image for question in bench.questions for image in question.images]
    assert torch.equal(vae_input, torch.stack([proc.world_pixels(image) for image in images]))
    assert torch.equal(siglip_input, torch.stack([proc.siglip_pixels(image) for image in images]))
    for row, question in enumerate(bench.questions):
        # image 1's world block, image 1's Gemma block, image 2's world block...
        assert blocks_in_order(segments[row]) == [SEG_WORLD, SEG_IMAGE] * len(question.images)
        blocks = embeds[row][segments[row] == SEG_WORLD].view(len(question.images), model.num_world_tokens, -1)
        for place, block in enumerate(blocks):
            assert torch.allclose(block, own[row][place], atol=1e-5), f"question {row + 1}, image {place + 1}"


def test_shuffled_world_lends_each_world_block_another_questions_image(model, tmp_path, monkeypatch):
    rows = blink_rows("Art_Style", 2, multi_image=2, images=3)  # questions of 1, 1, 3 and 3 images
    bench = load_benchmark(str(write_hub_folder(tmp_path / "blink", "val", {"Art_Style": (rows, BLINK_FEATURES)})),
                           "Art_Style")
    spy = WorldSpy(model, monkeypatch)
    evaluate_benchmarks(model, [bench], ["shuffled_world"], batch_size=4, bootstrap_samples=10, max_new_tokens=2)
    assert list(derangement(4, seed=0)) == [1, 3, 0, 2]  # question 1 lends to question 3, ...
    q1, q2, q3, q4 = (question.images for question in bench.questions)
    # A donor of fewer images is repeated (question 3 gets question 1's one image thrice), of more is cut (question 2
    # gets question 4's first); a donor of as many lends all its images in order.
    lent = [[q2[0]], [q4[0]], [q1[0]] * 3, list(q3)]
    proc = model.processor
    (vae_input,), (siglip_input,) = spy.vae_inputs, spy.siglip_inputs
    assert torch.equal(vae_input, torch.stack([proc.world_pixels(image) for images in lent for image in images]))
    # Gemma's image blocks keep the questions' own images.
    own = [image for question in bench.questions for image in question.images]
    assert torch.equal(siglip_input, torch.stack([proc.siglip_pixels(image) for image in own]))


def test_shuffled_world_gives_every_question_another_questions_world_even_one_at_a_time(model, tmp_path, monkeypatch):
    bench = load_benchmark(str(blink_folder(tmp_path / "blink", count=5, multi_image=0)), "Relative_Depth")
    spy = WorldSpy(model, monkeypatch)
    result = evaluate_benchmarks(model, [bench], ["shuffled_world"], batch_size=1, bootstrap_samples=10)
    true_worlds = [model.processor.world_pixels(q.images[0]) for q in bench.questions]
    assert len(spy.world_pixels) == len(bench.questions) == 5
    for number, seen in enumerate(spy.world_pixels):
        assert all(torch.equal(row, seen[0]) for row in seen)  # every option of a question: the same world
        matches = [other for other, world in enumerate(true_worlds) if torch.equal(seen[0], world)]
        assert len(matches) == 1 and matches[0] != number, f"question {number} got the world of {matches}"
    assert {s.condition for s in result.samples} == {"shuffled_world"}


def test_loglikelihood_encodes_each_image_once_per_question_whatever_its_options(model, tmp_path, monkeypatch):
    rows = blink_rows("Counting", 3)
    for row in rows:
        row["choices"] = ["0", "1", "2", "3"]
        row["prompt"] = "How many?\nSelect from the following choices.\n(A) 0\n(B) 1\n(C) 2\n(D) 3"
    bench = load_benchmark(str(write_hub_folder(tmp_path / "blink", "val", {"Counting": (rows, BLINK_FEATURES)})),
                           "Counting")
    spy = WorldSpy(model, monkeypatch)
    result = evaluate_benchmarks(model, [bench], ["full"], batch_size=3, bootstrap_samples=10,
                                 protocol="loglikelihood")
    assert [len(pixels) for pixels in spy.world_pixels] == [3]  # three questions of four options: three worlds
    assert [len(pixels) for pixels in spy.siglip_inputs] == [3]  # and Gemma's own image block: once per question too
    assert all(len(s.scores) == 4 for s in result.samples)


def test_no_world_leaves_the_world_out_of_the_prompt_and_the_model(model, tmp_path, monkeypatch):
    bench = load_benchmark(str(blink_folder(tmp_path / "blink", count=3)), "Relative_Depth")
    spy = WorldSpy(model, monkeypatch)
    encoded = []
    monkeypatch.setattr(model, "encode_world", lambda pixels: encoded.append(pixels) or torch.zeros(0))
    result = evaluate_benchmarks(model, [bench], ["no_world"], batch_size=2, bootstrap_samples=10)
    assert spy.world_slots == [False, False] and spy.world_pixels == [None, None] and encoded == []
    assert len(result.samples) == 4  # the two-image question too
    # ... and only inside the ablation: a batch with world slots but no world input is still refused.
    proc = model.processor
    batch = proc.collate([proc(picture(0), caption="(A)")])
    with pytest.raises(ValueError, match="needs world_pixels"):
        model(batch["input_ids"], batch["segment_ids"])


def test_gemma_baseline_is_plain_gemma_with_its_image_tokens_and_the_same_prompts(model, tmp_path, monkeypatch):
    bench = load_benchmark(str(blink_folder(tmp_path / "blink", count=2)), "Relative_Depth")
    built = []

    def baseline():
        from theworld.evaluate import gemma_baseline

        built.append(gemma_baseline(model))
        return built[-1]

    result = evaluate_benchmarks(model, [bench], ["full", "gemma"], baseline=baseline, bootstrap_samples=10,
                                 protocol="loglikelihood")
    (plain,) = built
    assert plain.world_encoder is None and plain.config.gemma_image_tokens and not plain.config.enable_world
    expected = option_log_likelihoods(plain, plain.processor, bench.questions)
    scores = [s.scores for s in result.samples if s.condition == "gemma"]
    assert all(torch.allclose(torch.tensor(s), e, atol=1e-4) for s, e in zip(scores, expected, strict=True))
    assert result.world_gains == []  # no shuffled_world: no gain to report


def test_conditions_that_cannot_run_are_refused_before_any_weight_loads(tmp_path):
    bench = load_benchmark(str(blink_folder(tmp_path / "blink", count=3)), "Relative_Depth")
    assert check_conditions(None, True, [bench]) == ["full", "no_world", "shuffled_world", "gemma"]
    assert check_conditions(None, False, [bench]) == ["full", "gemma"]
    with pytest.raises(UserError, match="this model has none"):
        check_conditions(["full", "shuffled_world"], False, [bench])
    single = load_benchmark(str(tmp_path / "blink"), "Relative_Depth", limit=1)
    with pytest.raises(UserError, match="there are 1 question.* in all: raise --limit to 2"):
        check_conditions(["shuffled_world"], True, [single])
    # One question in a task is enough: another task's questions lend it their world tokens.
    assert "shuffled_world" in check_conditions(None, True, [single, bench])


# ------------------------------------------------------------------------------------------------- the command
def test_evaluate_command_prints_the_table_and_writes_every_answer(tmp_path, tiny_models):
    folder = blink_folder(tmp_path / "blink", count=4, multi_image=1)
    output = tmp_path / "result.json"
    # Trained weights: a trainable-only checkpoint folder (weights, no training state) with a projector of its own.
    trained = TheWorld(*tiny_models, world_image_size=64).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for tensor in trained.trainable_state_dict().values():
            tensor.add_(torch.randn_like(tensor))
    (tmp_path / "final").mkdir()
    save_file(trained.trainable_state_dict(), tmp_path / "final" / "model.safetensors")
    run = theworld("evaluate", "--config", write_config(tmp_path, tiny_models), "--benchmark", folder,
                   "--ckpt_path", tmp_path / "final", "--output", output, "--bootstrap_samples", "200",
                   "--batch_size", "3", "--protocol", "loglikelihood", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    header = next(line for line in run.stdout.splitlines() if line.startswith("task"))
    assert header.split() == ["task", "n", "full", "no_world", "shuffled_world", "gemma", "world_gain"]
    assert "skipped" not in run.stdout  # the two-image question is asked too
    assert "questions/s" in run.stderr
    result = json.loads(output.read_text())
    assert len(result["samples"]) == (5 + 4) * 4  # questions x conditions
    rows = {(a["task"], a["condition"]): a for a in result["accuracies"] if a["sub_task"] is None}
    assert set(rows) == {(task, condition) for task in ("Relative_Depth", "Spatial_Relation", "all")
                         for condition in ("full", "no_world", "shuffled_world", "gemma")}
    assert rows[("all", "full")]["n"] == 9 and rows[("Relative_Depth", "gemma")]["split"] == "val"
    assert {g["task"] for g in result["world_gains"]} == {"Relative_Depth", "Spatial_Relation", "all"}
    # The loggers get the table's figures (W&B and TensorBoard as this CSV logger).
    with open(tmp_path / "run/logs/version_0/metrics.csv") as fh:
        (logged,) = list(csv.DictReader(fh))
    assert float(logged["eval/loglikelihood/all/full"]) == pytest.approx(rows[("all", "full")]["accuracy"])
    assert float(logged["eval/loglikelihood/Spatial_Relation/world_gain"]) == pytest.approx(
        next(g["gain"] for g in result["world_gains"] if g["task"] == "Spatial_Relation"))
    # The full condition scored with the checkpoint's weights, not the untrained projector.
    questions = load_benchmark(str(folder), "Relative_Depth").questions
    with torch.no_grad():
        expected = option_log_likelihoods(trained, trained.processor, questions)
    scores = [s["scores"] for s in result["samples"] if s["condition"] == "full" and s["config"] == "Relative_Depth"]
    assert all(torch.allclose(torch.tensor(s), e, atol=1e-4) for s, e in zip(scores, expected, strict=True))


def test_blink_and_cv_bench_laid_out_as_on_the_hub_run_end_to_end_with_default_options(tmp_path, tiny_models):
    config = write_config(tmp_path, tiny_models)
    # Art_Style as on the Hub: every question three images (image_1..image_3); Relative_Depth with a two-image one.
    blink = write_hub_splits(tmp_path / "BLINK", {
        "Art_Style": {"val": (blink_rows("Art_Style", 0, multi_image=2, images=3), BLINK_FEATURES),
                      "test": (blink_test_rows("Art_Style", 0, multi_image=2, images=3), BLINK_FEATURES)},
        "Relative_Depth": {"val": (blink_rows("Relative_Depth", 3, multi_image=1), BLINK_FEATURES),
                           "test": (blink_test_rows("Relative_Depth", 2), BLINK_FEATURES)},
        "Spatial_Relation": {"val": (blink_rows("Spatial_Relation", 2), BLINK_FEATURES),
                             "test": (blink_test_rows("Spatial_Relation", 1), BLINK_FEATURES)}})
    run = theworld("evaluate", "--config", config, "--benchmark", blink, "--output", tmp_path / "blink.json",
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "blink.json").read_text())
    assert result["protocol"] == "official"
    assert "protocol official: BLINK" in run.stdout and "10,000 resamples" in run.stdout
    # Every task, each question once per condition: nothing skipped, no task left empty.
    tasks = {a["task"]: a["n"] for a in result["accuracies"] if a["condition"] == "full"}
    assert tasks == {"Art_Style": 2, "Relative_Depth": 4, "Spatial_Relation": 2, "all": 8}
    assert result["skipped"] == {} and result["empty_tasks"] == {} and "skipped" not in run.stdout
    table_rows = [line.split()[0] for line in run.stdout.splitlines()]
    assert {"Art_Style", "Relative_Depth", "Spatial_Relation", "all"} <= set(table_rows)
    for condition in result["conditions"]:
        total = next(a for a in result["accuracies"] if a["task"] == "all" and a["condition"] == condition)
        thirds = {"Art_Style": 1 / 3, "Relative_Depth": 1 / 3, "Spatial_Relation": 1 / 3}
        assert total["accuracy"] == pytest.approx(hand_total(result["samples"], condition, thirds))
        per_task = [a["accuracy"] for a in result["accuracies"] if a["condition"] == condition and a["task"] in thirds]
        assert len(per_task) == 3 and total["accuracy"] == pytest.approx(sum(per_task) / 3)  # not pooled
    assert not (tmp_path / "blink.submission.json").exists()  # every answer known: nothing to submit

    run = theworld("evaluate", "--config", config, "--benchmark", blink, "--split", "test", "--conditions", "[full]",
                   "--output", tmp_path / "blink-test.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "blink-test.json").read_text())
    assert result["accuracies"] == [] and result["predictions_only"] == ["Art_Style", "Relative_Depth",
                                                                          "Spatial_Relation"]
    submission = json.loads((tmp_path / "blink-test.submission.json").read_text())
    assert sorted(submission) == ["test_Art_Style_1", "test_Art_Style_2", "test_Relative_Depth_1",
                                  "test_Relative_Depth_2", "test_Spatial_Relation_1"]
    assert submission == {s["question_id"]: s["predicted"] for s in result["samples"]}

    rows_2d = [cv_bench_row(n, "2D", ["Count", "Relation"][n % 2], ["ADE20K", "COCO"][n % 2],
                            ["(A)", "(B)"][n % 3 % 2]) for n in range(5)]
    rows_3d = [cv_bench_row(n, "3D", ["Depth", "Distance"][n % 2], "Omni3D", ["(A)", "(B)"][n % 2])
               for n in range(5, 8)]
    cv_bench = cv_bench_folder(tmp_path / "CV-Bench", rows_2d, rows_3d)
    run = theworld("evaluate", "--config", config, "--benchmark", cv_bench, "--output", tmp_path / "cv.json",
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "cv.json").read_text())
    assert {s["config"] for s in result["samples"]} == {"2D", "3D"} and len(result["samples"]) == 8 * 4  # once each
    assert "config default left out: it repeats 2D, 3D" in run.stdout
    published = {"ADE20K": 1 / 4, "COCO": 1 / 4, "Omni3D": 1 / 2}
    for condition in result["conditions"]:
        total = next(a for a in result["accuracies"] if a["task"] == "all" and a["condition"] == condition)
        assert total["accuracy"] == pytest.approx(hand_total(result["samples"], condition, published))


def perturbed_weights(tiny_models, folder, seed):
    """A trainable-only checkpoint folder whose weights differ from the untrained ones; returns the model."""
    model = TheWorld(*tiny_models, world_image_size=64).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for tensor in model.trainable_state_dict().values():
            tensor.add_(torch.randn_like(tensor))
    folder.mkdir()
    save_file(model.trainable_state_dict(), folder / "model.safetensors")
    return model


def test_a_trained_control_checkpoint_is_the_baseline_condition_with_its_gain(tmp_path, tiny_models):
    folder = blink_folder(tmp_path / "blink", count=4, multi_image=0)
    trained = perturbed_weights(tiny_models, tmp_path / "trained", seed=1)
    control = perturbed_weights(tiny_models, tmp_path / "control", seed=2)
    output = tmp_path / "result.json"
    run = theworld("evaluate", "--config", write_config(tmp_path, tiny_models), "--benchmark", folder, "--configs",
                   "[Relative_Depth]", "--ckpt_path", tmp_path / "trained", "--baseline", tmp_path / "control",
                   "--conditions", "[baseline, full]", "--protocol", "loglikelihood", "--output", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    header = next(line for line in run.stdout.splitlines() if line.startswith("task"))
    assert header.split() == ["task", "n", "baseline", "full", "gain_vs_baseline"]
    result = json.loads(output.read_text())
    questions = load_benchmark(str(folder), "Relative_Depth").questions
    for condition, model in (("baseline", control), ("full", trained)):  # full after baseline: its own weights back
        with torch.no_grad():
            expected = option_log_likelihoods(model, model.processor, questions)
        scores = [s["scores"] for s in result["samples"] if s["condition"] == condition]
        assert all(torch.allclose(torch.tensor(s), e, atol=1e-4) for s, e in zip(scores, expected, strict=True))
    accuracy = {(a["task"], a["condition"]): a["accuracy"] for a in result["accuracies"]}
    gains = {(g["task"], g["against"]): g["gain"] for g in result["world_gains"]}
    assert set(gains) == {("Relative_Depth", "baseline"), ("all", "baseline")}
    assert gains[("all", "baseline")] == pytest.approx(accuracy[("all", "full")] - accuracy[("all", "baseline")])
    assert result["models"]["baseline"].startswith(str(tmp_path / "control"))


@pytest.mark.parametrize("args,message", [
    (["--configs", "[Counting]"], "benchmark .*blink has no config 'Counting'; its configs are Relative_Depth, "
                                  "Spatial_Relation"),
    (["--ckpt_path", "last"], "--ckpt_path last: there is no checkpoint in .*run/checkpoints"),
    (["--conditions", "[full, baseline]"], "--conditions baseline: the baseline is a trained control checkpoint, "
                                           "and none was given. Name its folder with --baseline"),
], ids=["config-it-lacks", "no-last-checkpoint", "baseline-without-checkpoint"])
def test_evaluate_mistakes_are_one_error_paragraph(tmp_path, tiny_models, args, message):
    run = theworld("evaluate", "--config", write_config(tmp_path, tiny_models), "--benchmark",
                   blink_folder(tmp_path / "blink"), *args, cwd=tmp_path)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("theworld: error: ") and re.search(message, last), run.stderr[-2000:]
    assert "Traceback" not in run.stderr


def test_evaluate_help_lists_its_options_without_importing_datasets(tmp_path):
    code = ("import sys\nfrom theworld.lit.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('datasets imported:', 'datasets' in sys.modules)")
    run = theworld("evaluate", "--help", cwd=tmp_path, program=[sys.executable, "-c", code])
    assert "--benchmark" in run.stdout and "--conditions" in run.stdout and "shuffled_world" in run.stdout
    assert "datasets imported: False" in run.stdout


def test_each_evaluation_during_fit_is_kept_in_the_run_folder_its_checkpoint_and_final(demo_dir, tmp_path):
    cwd = workdir(demo_dir, tmp_path / "fresh")
    evaluation = [{"class_path": "theworld.callbacks.BenchmarkEvaluation",
                   "init_args": {"benchmark": "demo_assets/spatial_bench", "conditions": ["full", "shuffled_world"],
                                 "limit": 3, "every_n_train_steps": 2, "seed": 7}}]
    run = theworld("fit", "--config", REPO / "configs/demo_spatial.yaml", "--trainer.max_steps", "4",
                   "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "1",
                   "--checkpoint.every_n_train_steps", "4", "--trainer.callbacks", json.dumps(evaluation), cwd=cwd)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    run_folder = cwd / "runs/demo_spatial"
    kept = {step: json.loads((run_folder / f"evaluation/step-{step}.json").read_text()) for step in (2, 4)}
    for step, result in kept.items():
        assert (result["step"], result["protocol"], result["seed"], result["bootstrap_samples"]) == (
            step, "official", 7, 10_000)
        assert re.fullmatch(r"\S*demo_assets/gemma-3-tiny@unrecorded \+ \S*demo_assets/cosmos-tiny@unrecorded",
                            result["models"]["TheWorld"])  # local folders: no Hub revision to record
        assert all(s["prompt"].startswith("Which half of the image") or s["prompt"].startswith("Is the shape")
                   for s in result["samples"])
        assert len(result["samples"]) == 2 * 3 * 2  # tasks x --limit x conditions
    for folder in ("checkpoints/checkpoint-4", "checkpoints/final"):
        assert json.loads((run_folder / folder / "evaluation.json").read_text()) == kept[4], folder
