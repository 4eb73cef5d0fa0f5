"""A checkpoint folder on a filesystem that fills up: the failed write is reported at once (the folder, the errno's
words, the newest complete checkpoint), ``last`` keeps pointing at a complete folder, and the run stops non-zero
instead of training on for another save interval without a word."""

import os
import re
import subprocess

import pytest
from support.cli_runs import fit, logged_losses

from theworld.callbacks.checkpoint import check_intact

pytestmark = pytest.mark.reliability

# A checkpoint of the demo is 1.6 MB: the first fits, the second does not.
SMALL_FILESYSTEM = "2600k"


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2.6 MB tmpfs mounted for the test (mounting needs root, which CI's machines give)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_FILESYSTEM}", "tmpfs", mount], check=True)
    yield mount
    subprocess.run(["umount", "-l", mount], check=True)


def test_a_full_disk_stops_the_run_at_the_failed_save_and_last_stays_complete(demo_dir, tmp_path, small_filesystem,
                                                                               figures):
    checkpoints = small_filesystem / "checkpoints"
    result = fit(demo_dir, "--trainer.max_steps", "8", "--checkpoint.every_n_train_steps", "2",
                 "--checkpoint.save_top_k", "-1", "--trainer.val_check_interval", "100", "--data.batch_size", "4",
                 "--checkpoint.dirpath", checkpoints, "--trainer.default_root_dir", tmp_path,
                 "--trainer.logger.init_args.save_dir", tmp_path)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    error = re.search(r"theworld: error: (.*)", text)
    assert error, text[-3000:]
    assert f"Writing the checkpoint {(checkpoints / 'checkpoint-4').resolve()} failed: No space left on device " \
           f"(ENOSPC)" in error[1], error[1]
    assert f"The newest complete checkpoint is {(checkpoints / 'checkpoint-2').resolve()}" in error[1], error[1]
    assert "--ckpt_path last" in error[1]
    # `last` never points at an incomplete folder, and nothing of the failed one is left.
    assert (checkpoints / "last").resolve().name == "checkpoint-2"
    check_intact(checkpoints / "last", "--ckpt_path")
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    # Reported at the failed save (the write runs beside the next step), not one save interval later.
    trained = sorted(logged_losses(tmp_path))
    assert trained and trained[-1] <= 5, trained
    assert not (checkpoints / "final").exists()
    figures.record("disk_full", filesystem=SMALL_FILESYSTEM, exit_code=result.returncode, stopped_at=trained[-1] + 1,
                   named="checkpoint-4, ENOSPC, the newest complete checkpoint-2", last="checkpoint-2")
