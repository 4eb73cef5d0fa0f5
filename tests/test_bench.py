"""The benchmark scripts run and print their JSON summary (their figures are checked on a GPU, not here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def last_json_line(*args) -> dict:
    result = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def test_train_step_tiny_smoke():
    """Every run but compile (its inductor build takes half a minute on CPU: the slow variant below)."""
    summary = last_json_line(REPO / "bench/train_step.py", "--tiny", "--runs", "reference", "reference_ckpt",
                             "reference_cached", "default")
    assert summary["device"] == "cpu"
    for name in ("bare_gemma_reference", "theworld_reference", "theworld_reference_ckpt", "theworld_reference_cached",
                 "theworld_default_b8"):
        assert summary[f"{name}.step_s"] > 0
    assert "theworld_reference.ratio_to_bare" in summary


@pytest.mark.slow
def test_train_step_tiny_smoke_with_compile():
    summary = last_json_line(REPO / "bench/train_step.py", "--tiny", "--runs", "reference", "reference_compile")
    assert summary["theworld_reference_compile.step_s"] > 0 and "theworld_reference_compile.ratio_to_bare" in summary


def test_loss_head_keeps_no_logits_for_backward():
    summary = last_json_line(REPO / "bench/loss_head.py", "--rows", "64", "--vocab", "4096", "--hidden", "32",
                             "--repeats", "2")
    assert summary["chunked.step_s"] > 0 and summary["full_logits.step_s"] > 0
    # The full-logits head keeps at least one float32 (rows x vocab) tensor; the chunked one only the
    # (rows x hidden) gradient it already computed.
    assert summary["full_logits.saved_mib"] >= 64 * 4096 * 4 / 2**20
    assert summary["chunked.saved_mib"] <= 64 * 32 * 4 / 2**20 + 0.1


def test_save_blocking_prints_its_ratio():
    summary = last_json_line(REPO / "bench/save_blocking.py", "--hidden", "512", "--repeats", "2")
    assert summary["save_block_s"] > 0 and summary["raw_save_s"] > 0
    assert summary["ratio"] == pytest.approx(summary["save_block_s"] / summary["raw_save_s"], rel=0.05)


def test_data_throughput_prints_the_worker_rate_and_the_wait():
    summary = last_json_line(REPO / "bench/data_throughput.py", "--samples", "16", "--steps", "2", "--step-s", "0.01",
                              "--url-samples", "8", "--rounds", "1")
    assert summary["samples_per_s_per_worker"] > 0 and summary["main_process_data_s_per_step"] >= 0
    assert summary["url_samples_per_s_per_worker_rules_on"] > 0 and summary["url_samples_per_s_per_worker_rules_off"] > 0
    assert summary["cached_samples_per_s_per_worker"] > 0


def test_evaluate_throughput_prints_questions_per_second_for_each_condition():
    result = subprocess.run([sys.executable, REPO / "bench/evaluate_throughput.py", "--questions", "4", "--batch_sizes",
                             "2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [row["condition"] for row in rows] == ["full", "no_world", "shuffled_world", "gemma"]
    assert all(row["questions_per_second"] > 0 and row["questions"] == 4 for row in rows)


@pytest.mark.slow
def test_estimate_predicts_the_measured_h200_rows_within_ten_percent():
    """`theworld estimate`'s step replayed at each measured H200 shape (about 1 CPU-minute at real size)."""
    summary = last_json_line(REPO / "bench/estimate_check.py")
    for row in summary["rows"]:
        assert 0.9 <= row["ratio"] <= 1.1, row
        assert 0.9 <= row.get("time_ratio", 1.0) <= 1.1, row
