"""Both data sources through `theworld fit` in a subprocess (HTTP shards, parquet + image URLs, bad data),
and the loader's uint8 pixels."""

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from support.cli_runs import assert_same_weights, fit, provenance

from theworld.data.decode import SKIP_REASONS
from theworld.data.processing import TheWorldProcessor, load_gemma_processor
from theworld.lit.datamodule import TheWorldDataModule
from theworld.provenance import key_kinds
from theworld.testing.bad_samples import write_bad_samples
from theworld.testing.synthetic import write_parquet

# A few steps, no checkpoints and no validation unless a test asks for them.
TINY = ["--trainer.max_steps", "4", "--checkpoint.every_n_train_steps", "0", "--trainer.val_check_interval", "4",
        "--trainer.limit_val_batches", "0", "--data.batch_size", "8"]


def fit_metrics(demo_dir: Path, run_dir: Path, *args) -> list[dict[str, str]]:
    """`theworld fit` on configs/demo.yaml (tiny models) with overrides; returns the metrics.csv rows."""
    result = fit(demo_dir, "--trainer.default_root_dir", run_dir, "--trainer.logger.init_args.save_dir", run_dir,
                 *args, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    (metrics,) = run_dir.glob("logs/version_*/metrics.csv")
    with open(metrics) as fh:
        return list(csv.DictReader(fh))


def last_logged(rows: list[dict[str, str]], prefix: str) -> dict[str, float]:
    """The latest value written for each column starting with ``prefix``, by the column's suffix."""
    return {key[len(prefix):]: float(value) for row in rows for key, value in row.items()
            if key.startswith(prefix) and value}


def requested_paths(caplog) -> Counter:
    """URL paths the test servers answered, from their request log (args: client, request line, code, size)."""
    return Counter(record.args[1].split()[1] for record in caplog.records
                   if record.name == "theworld.testing.http" and len(record.args) == 4)


def test_webdataset_shards_over_http_train_and_validate(demo_dir, tmp_path, serve):
    url = serve(demo_dir / "demo_assets/data")
    rows = fit_metrics(demo_dir, tmp_path, *TINY, "--data.train_data", url + "/train-{00000..00003}.tar",
               "--data.val_data", url + "/val-00000.tar", "--trainer.limit_val_batches", "1")
    assert len([r for r in rows if r.get("train/loss")]) == 4
    assert [r for r in rows if r.get("val/loss")], "validation ran on the HTTP shard"


def test_parquet_urls_train_with_the_first_rows_held_out_for_validation(demo_dir, tmp_path, serve, caplog):
    caplog.set_level(logging.DEBUG, logger="theworld.testing.http")
    url = serve(tmp_path / "images")
    val_samples, rows_per_file = 8, 24
    for part in range(2):
        write_parquet(tmp_path / f"meta/part-{part}.parquet", rows_per_file, url, image_dir=tmp_path / "images",
                      start_index=part * rows_per_file)
    rows = fit_metrics(demo_dir, tmp_path / "run", *TINY, "--data.source", "hf",
               "--data.train_data", tmp_path / "meta/part-*.parquet", "--data.val_data", "null",
               "--data.val_samples", val_samples, "--trainer.limit_val_batches", "1.0")
    assert len([r for r in rows if r.get("train/loss")]) == 4
    assert [r for r in rows if r.get("val/loss")]
    # Validation ran once over the first rows; training never fetched them (else they'd show twice).
    requests = requested_paths(caplog)
    held_out = [f"/{i:032x}.jpg" for i in range(val_samples)]
    assert [requests[path] for path in held_out] == [1] * val_samples
    assert sum(requests.values()) > val_samples, "training downloaded images"


# Logging every 3rd of the 4 steps: the last step is not a logging step, so the final totals must come
# from the epoch-end log.
SPARSE_LOGS = ["--data.val_data", "null", "--trainer.log_every_n_steps", "3"]


def test_bad_samples_and_urls_are_skipped_and_the_counts_match_what_was_planted(demo_dir, tmp_path, serve):
    delays = {}
    url = serve(tmp_path / "images", delay_s=delays)
    planted = write_bad_samples(tmp_path, "parquet", image_url_base=url)
    delays.update({path: 60 for path in planted.slow_paths})  # hangs far past the download timeout
    assert {"http_error", "timeout", "decompression_bomb", "bad_utf8"} <= set(planted.expected) <= set(SKIP_REASONS)
    assert len(planted.good_keys) == 32 and planted.expected["too_small"] == 2, "one of them after the last good row"
    # To the end of the data: one whole epoch, in batches of 5: each of the 2 workers ends on a partial batch, so
    # steps x batch (40) is not what was trained.
    rows = fit_metrics(demo_dir, tmp_path / "run", *TINY, *SPARSE_LOGS, "--trainer.max_steps", "-1", "--trainer.max_epochs",
               "1", "--data.source", "hf", "--data.train_data", planted.path, "--data.clip_score_threshold", "0.2",
               "--data.download_timeout_s", "0.5", "--data.download_retries", "1", "--data.batch_size", "5")
    assert max(int(r["step"]) for r in rows) == 7, "the epoch ended after 8 steps (2 workers x 16 good samples)"
    assert last_logged(rows, "data/skipped_") == planted.expected
    # Provenance holds every good row once, by its DataComp uid, and says so.
    final = tmp_path / "run/checkpoints/final"
    assert sorted(key for _, _, key in provenance(final)) == sorted(planted.good_keys)
    assert key_kinds(final) == {"uid"}
    # The run's yield summary, img2dataset-style: what was trained on and each reason, as counts and rates.
    (summary,) = (tmp_path / "run").glob("logs/version_*/data_yield.json")
    figures = json.loads(summary.read_text())
    skips = {reason: n for reason, n in planted.expected.items() if reason != "converted_mode"}
    assert figures["skipped"] == skips and figures["trained"] == 32
    assert figures["records"] == 32 + sum(skips.values()) == len(pq.read_table(planted.path))
    assert figures["converted_mode"] == planted.expected["converted_mode"]
    assert figures["yield"] == pytest.approx(32 / figures["records"], abs=1e-6)
    assert figures["skipped_rates"]["http_error"] == pytest.approx(skips["http_error"] / figures["records"], abs=1e-6)


def test_bad_sample_counts_carry_over_a_resume(demo_dir, tmp_path):
    planted = write_bad_samples(tmp_path, "webdataset")
    # 4 steps of 8 are the whole corpus. Step-based on purpose: with max_steps=-1 Lightning builds the train
    # loader before restoring the checkpoint and drops its data position (Lightning issue #20550).
    args = [*TINY, *SPARSE_LOGS, "--data.train_data", planted.path, "--checkpoint.every_n_train_steps", "2"]
    assert last_logged(fit_metrics(demo_dir, tmp_path / "straight", *args), "data/skipped_") == planted.expected
    rows = fit_metrics(demo_dir, tmp_path / "resumed", *args, "--ckpt_path", tmp_path / "straight/checkpoints/checkpoint-2")
    assert sorted({int(r["step"]) for r in rows}) == [2, 3], "steps 3 and 4 only"
    assert last_logged(rows, "data/skipped_") == planted.expected


def test_resampled_shards_train_and_resume_exactly(demo_dir, tmp_path):
    args = [*TINY, "--data.val_data", "null", "--data.num_workers", "2", "--data.resampled", "true",
            "--checkpoint.every_n_train_steps", "2"]
    fit_metrics(demo_dir, tmp_path / "straight", *args)
    rows = fit_metrics(demo_dir, tmp_path / "resumed", *args, "--ckpt_path", tmp_path / "straight/checkpoints/checkpoint-2")
    assert sorted({int(r["step"]) for r in rows if r.get("train/loss")}) == [2, 3], "steps 3 and 4 only"
    trained = provenance(tmp_path / "straight/checkpoints/final")
    assert len(trained) == 32 and provenance(tmp_path / "resumed/checkpoints/final") == trained
    assert_same_weights(tmp_path / "straight/checkpoints/final", tmp_path / "resumed/checkpoints/final")


def test_loader_pixels_are_uint8_and_normalised_on_the_device(tiny_models):
    processor = TheWorldProcessor(load_gemma_processor(tiny_models[0]), world_tokens=16, world_image_size=64)
    images = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.linear_gradient("L").convert("RGB")]
    examples = [processor(image, caption="a red circle") for image in images]
    shipped = processor.collate(examples, normalize=False)
    assert shipped["pixel_values"].dtype == shipped["world_pixels"].dtype == torch.uint8
    datamodule = TheWorldDataModule()
    datamodule.processor = processor
    batch = datamodule.on_after_batch_transfer(shipped, dataloader_idx=0)
    expected = processor.collate(examples)
    for key in ("pixel_values", "world_pixels"):
        assert batch[key].dtype == torch.float32 and torch.equal(batch[key], expected[key]), key
    assert torch.equal(batch["world_pixels"][1], processor.world_pixels(images[1]))
    assert batch["world_pixels"][0, :, 0, 0].tolist() == [1.0, -1.0, -1.0]  # red, scaled to [-1, 1]
