"""An image server that answers 429 with absurd Retry-After values, through `theworld fit` on the hf source.

Obeyed as sent, `Retry-After: 86400` stalls a loader worker for a day and `Retry-After: 99999999999999` raises
OverflowError in time.sleep, which ends the run. Each must cost at most data.download_timeout_s per retry."""

import json
from collections import Counter

import pytest
from support.cli_runs import fit

from theworld.testing.synthetic import uid_of, write_parquet

pytestmark = pytest.mark.reliability

HOSTILE = ("86400", "99999999999999", "garbage", "Fri, 31 Dec 9999 23:59:59 GMT")


def test_hostile_retry_after_values_cost_a_bounded_wait_and_lose_nothing(demo_dir, tmp_path, serve, figures):
    status, headers, hits = {}, {}, Counter()
    url = serve(tmp_path / "images", status=status, headers=headers, hits=hits)
    write_parquet(tmp_path / "meta.parquet", 40, url, image_dir=tmp_path / "images")
    busy = {f"/{uid_of(1 + 8 * i)}.jpg": value for i, value in enumerate(HOSTILE)}  # among the first 32 rows
    for path, value in busy.items():
        status[path], headers[path] = 429, {"Retry-After": value}
    run = tmp_path / "run"
    # 4 steps of 8 samples: 32 of the 36 good rows. Retries wait at most download_timeout_s each.
    result = fit(demo_dir, "--trainer.default_root_dir", run, "--trainer.logger.init_args.save_dir", run,
                 "--trainer.max_steps", "4", "--checkpoint.every_n_train_steps", "0", "--trainer.val_check_interval",
                 "4", "--trainer.limit_val_batches", "0", "--data.batch_size", "8", "--data.val_data", "null",
                 "--data.source", "hf", "--data.train_data", tmp_path / "meta.parquet",
                 "--data.download_timeout_s", "0.5", "--data.download_retries", "1", timeout=300)
    injected = sum(hits[path] for path in busy)
    figures.record("faults", kind="429 with a hostile Retry-After (a day, 10^14 s, garbage, year 9999)",
                   injected=injected)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "OverflowError" not in result.stderr and "Retry-After" not in result.stderr, "quiet: no line per image"
    assert [hits[path] for path in busy] == [2] * len(HOSTILE), "each asked once, retried once, then skipped"
    (summary,) = run.glob("logs/version_*/data_yield.json")
    assert json.loads(summary.read_text())["skipped"] == {"http_error": len(HOSTILE)}
    assert (run / "checkpoints/final/model.safetensors").is_file()
