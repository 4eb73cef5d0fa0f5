"""Resuming as users do it: `--ckpt_path last` after a run with each kind of logger, a new run that would land on
another run's checkpoints, a changed schedule, a run that already finished (signals: tests/reliability/test_signals.py).
Every resume is checked by the steps it trains (from the checkpoint's step on, and only those), not only by its
final weights."""

import re
import shutil
from pathlib import Path

import pytest
from support.accounts import ALICE
from support.cli_runs import (
    REPO,
    SHORT,
    assert_resumed,
    assert_same_weights,
    fit,
    logged_losses,
    theworld,
)
from support.hub_cli import hub_env

LOGGERS = {
    "csv": [],  # configs/demo.yaml's own
    "wandb": ["--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.init_args.offline",
              "true", "--trainer.logger.init_args.project", "theworld-test"],
    "none": ["--trainer.logger", "false"],
}


def copy_checkpoints(straight_run: Path, root: Path, upto: int) -> None:
    """A run folder as the straight run left it after step ``upto``: its checkpoints, ``last`` pointing at them."""
    (root / "checkpoints").mkdir(parents=True)
    for step in range(4, upto + 1, 4):
        shutil.copytree(straight_run / f"checkpoints/checkpoint-{step}", root / f"checkpoints/checkpoint-{step}")
    (root / "checkpoints/last").symlink_to(f"checkpoint-{upto}")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def output(result) -> str:
    return result.stdout + result.stderr


def test_ckpt_path_last_starts_at_step_0_then_resumes_where_the_first_run_stopped(demo_dir, tmp_path):
    """What a restart script meets: its first launch, with --ckpt_path last and nothing to resume, says so and starts
    at step 0; the same command with more steps resumes (its losses differ from a straight 8-step run's: the first
    run's LR schedule was 4 steps long, and the message says how the schedule changes)."""
    root = ["--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir", tmp_path]
    first = fit(demo_dir, *SHORT, *root, "--trainer.max_steps", "4", "--ckpt_path", "last")
    assert first.returncode == 0, first.stderr[-3000:]
    text = output(first)
    assert f"--ckpt_path last: no checkpoint in {tmp_path / 'checkpoints'}; training starts from step 0." in text
    assert "theworld: training steps 0 -> 4" in text and "no last checkpoint available" not in text
    resumed = fit(demo_dir, *SHORT, *root, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "theworld: training steps 4 -> 8" in output(resumed)
    assert ("resuming at step 4 of a run scheduled for trainer.max_steps=4; this run goes to 8, so the cosine LR "
            "schedule now spans 8 steps") in output(resumed)
    assert sorted(logged_losses(tmp_path)) == [4, 5, 6, 7], "the resumed run trained steps 5 to 8 only"


@pytest.mark.parametrize("logger", ["wandb", "none"])
def test_ckpt_path_last_finds_the_checkpoints_whatever_the_logger(straight_run, demo_dir, tmp_path, logger):
    copy_checkpoints(straight_run, tmp_path, upto=4)
    result = fit(demo_dir, *SHORT, *LOGGERS[logger], "--trainer.default_root_dir", tmp_path, "--ckpt_path", "last",
                 env={"WANDB_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "theworld: training steps 4 -> 8" in output(result)
    assert_same_weights(straight_run / "checkpoints/final", tmp_path / "checkpoints/final")


def test_a_new_run_refuses_a_folder_with_another_runs_checkpoints(straight_run, demo_dir, tmp_path):
    copy_checkpoints(straight_run, tmp_path, upto=8)
    before = snapshot(tmp_path / "checkpoints")
    result = fit(demo_dir, *SHORT, "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir",
                 tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("theworld: error: ")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr
    for text in (str(tmp_path / "checkpoints"), "--ckpt_path last", "--checkpoint.dirpath", "--checkpoint.overwrite"):
        assert text in errors[0]
    assert snapshot(tmp_path / "checkpoints") == before, "not a byte of the old checkpoints changed"

    overwritten = fit(demo_dir, *SHORT, "--trainer.max_steps", "4", "--trainer.default_root_dir", tmp_path,
                      "--trainer.logger.init_args.save_dir", tmp_path, "--checkpoint.overwrite", "true")
    assert overwritten.returncode == 0, overwritten.stderr[-3000:]
    assert "theworld: training steps 0 -> 4" in output(overwritten)


def test_a_finished_run_started_again_says_it_is_done(straight_run, demo_dir, tmp_path):
    shutil.copytree(straight_run / "checkpoints", tmp_path / "checkpoints", symlinks=True)
    before = snapshot(tmp_path / "checkpoints")
    result = fit(demo_dir, *SHORT, "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir",
                 tmp_path, "--ckpt_path", "last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already finished at step 8 (trainer.max_steps=8): nothing to train" in output(result)
    assert "TrainableCheckpoint" not in output(result) and "theworld: training steps" not in output(result)
    assert snapshot(tmp_path / "checkpoints") == before


def test_a_run_too_short_for_its_schedule_ends_with_a_checkpoint_of_its_last_step(demo_dir, tmp_path):
    """Checkpoints every 100 steps, a run of 3: the end of training saves checkpoint-3 and points `last` at it, as
    any save does (Lightning's own end-of-training save wrote `last` as a folder of its own and no checkpoint-3)."""
    root = ["--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir", tmp_path]
    result = fit(demo_dir, *SHORT, "--trainer.max_steps", "3", "--checkpoint.every_n_train_steps", "100", *root)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / "last").is_symlink() and (checkpoints / "last").resolve().name == "checkpoint-3"


def test_a_run_whose_schedule_missed_its_last_step_is_finished_too(demo_dir, tmp_path):
    """Checkpoints every 4 of 6 steps: the end of training still leaves step 6 resumable, so `--ckpt_path last` says
    the run is done instead of training steps 4 -> 6 again, and validate reports the final weights' step."""
    root = ["--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir", tmp_path]
    first = fit(demo_dir, *SHORT, "--trainer.max_steps", "6", *root)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "checkpoints/last").resolve().name == "checkpoint-6"

    again = fit(demo_dir, *SHORT, "--trainer.max_steps", "6", *root, "--ckpt_path", "last")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished at step 6 (trainer.max_steps=6): nothing to train" in output(again)
    assert "theworld: training steps" not in output(again)

    validated = theworld("validate", "--config", REPO / "configs/demo.yaml", *root, "--model.init_from",
                         tmp_path / "checkpoints/final", "--trainer.limit_val_batches", "1", "--model.val_captions",
                         "4", cwd=demo_dir)
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert "theworld: step 6: " in output(validated)


def card_rows(hub, repo_id: str) -> list[str]:
    """The rows of the results table (one per validation) of the card the run pushed."""
    card = hub.files(repo_id)["README.md"].decode()
    return [line for line in card.split("## Results", 1)[1].splitlines() if re.match(r"\| \d", line)]


def test_a_resume_keeps_the_validation_of_its_checkpoint_step_on_the_card(demo_dir, hub, tmp_path):
    """Checkpoint and validation every 2 steps: the checkpoint of step 2 is written before step 2's validation.
    Resumed from it, the run validates step 2 again before training on, and its card has the straight run's rows."""
    args = ["--trainer.max_steps", "4", "--checkpoint.every_n_train_steps", "2", "--trainer.val_check_interval", "2",
            "--trainer.limit_val_batches", "1", "--data.batch_size", "8", "--hub.push_to_hub", "true",
            "--hub.hub_strategy", "end"]
    env = hub_env(hub.url, tmp_path / "hf_home", HF_TOKEN=ALICE)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = fit(demo_dir, *args, "--trainer.default_root_dir", straight, "--trainer.logger.init_args.save_dir",
                straight, "--hub.hub_model_id", "alice/straight", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints/checkpoint-2", resumed / "checkpoints/checkpoint-2")
    again = fit(demo_dir, *args, "--trainer.default_root_dir", resumed, "--trainer.logger.init_args.save_dir",
                resumed, "--hub.hub_model_id", "alice/resumed", "--ckpt_path", resumed / "checkpoints/checkpoint-2",
                env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_resumed(resumed, straight, from_step=2, to_step=4)
    rows = card_rows(hub, "alice/straight")
    assert [row.split("|")[1].strip() for row in rows] == ["2", "4"]
    assert card_rows(hub, "alice/resumed") == rows
