"""A benchmark evaluation in the Hub repo: ``model-index`` entries with the Hub's metric ids, the dataset id, config
and split (parsed back with huggingface_hub's own ModelCard), the comparison table with the world gain, every answer
in ``evaluation/results.json``, read back whole (the record a checkpoint carries)."""

import json

import pytest
from huggingface_hub import ModelCard

from theworld.benchmarks import Benchmark
from theworld.config import TheWorldConfig
from theworld.evaluate import EvaluationResult, SampleResult, summarise
from theworld.hub.card import card_from_summary
from theworld.hub.report import EVALUATION_NAME, report_files
from theworld.run_summary import BenchmarkRecord, RunSummary, ValidationRecord


def result() -> EvaluationResult:
    """Two BLINK-style tasks of 20 questions: TheWorld right on 18 / 16, with shuffled world tokens on 10 / 9."""
    samples = []
    for config, right_full, right_shuffled in (("Larger", 18, 10), ("Left", 16, 9)):
        for i in range(20):
            for condition, right in (("full", right_full), ("shuffled_world", right_shuffled)):
                correct = i < right
                samples.append(SampleResult(str(i), config, config, None, condition, "(A)" if correct else "(B)",
                                            "(A)", correct, [0.0, -1.0], stratum=config))
    benchmarks = [Benchmark("BLINK-Benchmark/BLINK", config, "val", "blink", []) for config in ("Larger", "Left")]
    accuracies, gains = summarise(samples, benchmarks, bootstrap_samples=200)
    return EvaluationResult("BLINK-Benchmark/BLINK", ["full", "shuffled_world"], accuracies, gains, samples,
                            protocol_description="BLINK: the dataset's prompt, a generated answer, its leading letter",
                            total_rule="mean of the task accuracies (BLINK's total)")


def summary(**changes) -> RunSummary:
    base = RunSummary(model_config=TheWorldConfig(), dataset="mlfoundations/datacomp_small", step=500, max_steps=1000,
                      epochs=1, samples_seen=8000, effective_batch=16, learning_rate=1e-4, trainable_params=10,
                      total_params=100, world_tokens=16, wall_seconds=60.0, final=False,
                      history=(ValidationRecord(500, 8000, 2.0, 2.1, {"cider": 0.41, "bleu4": 0.12}),),
                      benchmark=BenchmarkRecord(500, result()))
    return RunSummary(**{**base.__dict__, **changes})


def test_the_card_publishes_the_benchmark_with_the_hubs_metric_ids_and_the_world_gain():
    card = ModelCard(card_from_summary(summary(), "alice/theworld"))
    entries = {(e.dataset_config, e.metric_type): e for e in card.data.eval_results}
    assert entries[("Larger", "accuracy")].metric_value == pytest.approx(0.9)
    assert entries[("Left", "accuracy")].metric_value == pytest.approx(0.8)
    for config in ("Larger", "Left"):
        entry = entries[(config, "accuracy")]
        assert (entry.dataset_type, entry.dataset_split) == ("BLINK-Benchmark/BLINK", "val")
    # The ablation is the card's table, not a result of the published model.
    assert len([e for e in card.data.eval_results if e.metric_type == "accuracy"]) == 2
    # Web captions are scored by CIDEr and BLEU, published under the Hub's metric ids, not as accuracy.
    captions = {e.metric_name: e.metric_type for e in card.data.eval_results if e.metric_name.startswith("val/")}
    assert captions == {"val/loss": "loss", "val/caption_cider": "cider", "val/caption_bleu4": "bleu"}
    assert "caption cider 0.410, caption bleu4 0.120" in card.text  # scores, not percentages
    assert "| Larger | 20 | 90.0%" in card.text
    assert "**+40.0 points**" in card.text and "**+35.0 points**" in card.text  # Larger 18-10, Left 16-9 of 20
    assert EVALUATION_NAME in card.text
    # The protocol is named in the table's text and in every model-index entry.
    assert "Protocol **official**" in card.text and "`all` is the mean of the task accuracies" in card.text
    assert entries[("Larger", "accuracy")].metric_name == "Larger accuracy (official protocol)"


def test_every_answer_is_pushed_beside_the_card_and_reads_back_whole():
    files = report_files(summary())
    pushed = json.loads(files[EVALUATION_NAME])
    assert pushed["step"] == 500 and len(pushed["samples"]) == 80
    restored = EvaluationResult.from_dict({k: v for k, v in pushed.items() if k != "step"})
    assert restored == summary().benchmark.result
    assert restored.metrics()["eval/official/Larger/world_gain"] == pytest.approx(0.4)
    assert EVALUATION_NAME not in report_files(summary(benchmark=None))
