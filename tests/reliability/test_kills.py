"""SIGKILL `theworld fit` at seeded random moments (during a step, a local save, an upload to the Hub) and resume
it each time with `--ckpt_path last` (once from `hf://`) until it completes. Every resume starts at the step of the
checkpoint it resumes from (a restart from step 0 is lost work, and fails the test); after every kill every
checkpoint, local and on the Hub, still loads; at the end the weights and the per-step losses equal those of an
uninterrupted run. Every run here is a fresh interpreter, as a job starts it (not forked from a zygote:
support/cli_runs.py)."""

import io
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hub_server import Faults
from support.cli_runs import SHORT, assert_resumed, assert_same_weights, fit, provenance
from support.hub_cli import SECRET, hub_env

from theworld import TheWorld
from theworld.callbacks.checkpoint import TrainableCheckpointIO
from theworld.config import CONFIG_NAME
from theworld.layout import TRAINING_STATE_NAME, WEIGHTS_NAME

pytestmark = pytest.mark.reliability

HUB_REPO = "alice/killed"
# SHORT's steps, like the straight run (tests/conftest.py) whose final weights are the reference; a save every
# EVERY steps with the 2 newest kept, each pushed to the Hub with every checkpoint folder (pruned as locally).
MAX_STEPS, EVERY = int(SHORT[SHORT.index("--trainer.max_steps") + 1]), 2
RUN = [*SHORT, "--checkpoint.every_n_train_steps", EVERY, "--checkpoint.save_top_k", 2, "--hub.push_to_hub", "true",
       "--hub.hub_model_id", HUB_REPO, "--hub.hub_strategy", "all_checkpoints"]
KINDS = ("step", "save", "upload")
# While an upload is to be killed the Hub takes LFS bodies at 400 kB/s, so each upload lasts a second or two.
SLOW_UPLOADS = Faults(bandwidth_bps=400_000, paths=r"/lfs-upload/")


def draw_kill(rng: random.Random, kind: str, start: int) -> tuple[str, str, list]:
    """The moment to kill a run that restarts at step ``start``: (kind, the moment in words, the test callback's
    arguments). A run restarting after its last step has no step left to kill in: it gets a save instead."""
    saves = (MAX_STEPS - start) // EVERY + 1  # the checkpoints still to write, and final/
    if kind == "step" and start < MAX_STEPS:
        done = rng.randrange(start, MAX_STEPS)
        return "step", f"in step {done + 1}", ["--trainer.callbacks+=kill_points.PauseInStep",
                                              "--trainer.callbacks.init_args.at_step", done]
    if kind == "upload":  # the first push, or the one after it (a newer save or the final push)
        commit = rng.randint(1, min(2, saves))
        return "upload", f"in Hub commit {commit}", ["--trainer.callbacks+=kill_points.MarkUpload",
                                                     "--trainer.callbacks.init_args.at", commit]
    save = rng.randint(1, saves)
    return "save", f"in save {save} of {saves}", ["--trainer.callbacks+=slow_save.HangOnSave",
                                                  "--trainer.callbacks.init_args.hang_at", save]


def resume_from(root: Path, hub, hf_done: bool) -> tuple[str, list, int]:
    """(source, --ckpt_path arguments, the step training restarts at): `hf://` the first time the Hub holds a
    resumable last-checkpoint/, `last` otherwise."""
    try:
        on_hub = hub.files(HUB_REPO).get(f"last-checkpoint/{TRAINING_STATE_NAME}")
    except KeyError:  # the first run has not created the repo yet
        on_hub = None
    if on_hub is not None and not hf_done:
        start = torch.load(io.BytesIO(on_hub), weights_only=True)["global_step"]
        return "hf", ["--ckpt_path", f"hf://{HUB_REPO}"], start
    last = root / "checkpoints/last"
    # With no `last` yet, Lightning warns and starts from scratch: what a user's restart script does.
    start = torch.load(last / TRAINING_STATE_NAME, weights_only=True)["global_step"] if last.exists() else 0
    return "last", ["--ckpt_path", "last"], start


STARTED = re.compile(r"theworld: (?:training steps (\d+) -> |the run in \S+ already finished at step (\d+))")


def started_at(output: str) -> int | None:
    """The step a run began training at, as it announced it (a run resumed after its end has nothing to train)."""
    match = STARTED.search(output)
    return int(match[1] or match[2]) if match else None


def kill_at_marker(demo_dir: Path, args: list, env: dict, marker: Path, log: Path) -> None:
    with open(log, "w") as output:
        proc = fit(demo_dir, *args, "--trainer.callbacks.init_args.marker", marker, env=env,
                   stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before its kill point:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no kill point within 240 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def shapes(weights: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {name: tuple(tensor.shape) for name, tensor in weights.items()}


def unloadable_checkpoints(checkpoints: Path, hub, reference: dict) -> tuple[int, int, list[str]]:
    """Loads every complete local folder as resume does, and every folder on the Hub from its bytes.

    Runs in the demo folder: config.json names the base models by their demo_assets/... paths.

    Returns (local folders, Hub folders, problems); temporaries of a killed save are not checkpoints."""
    problems, io_plugin = [], TrainableCheckpointIO(async_save=False)
    names = sorted(checkpoints.iterdir()) if checkpoints.is_dir() else []  # none yet if killed in the first steps
    local = [d for d in names if re.fullmatch(r"checkpoint-\d+|last|final", d.name)]
    for folder in local:
        try:
            json.loads((folder / CONFIG_NAME).read_text())
            if folder.name == "final":
                weights = safetensors.torch.load_file(folder / WEIGHTS_NAME)
            else:  # torch.load(weights_only=True) of the training state + the safetensors weights
                state = io_plugin.load_checkpoint(folder)
                weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
            assert shapes(weights) == reference, "not the model's trainable tensors"
            if folder.name == "last":  # what `--ckpt_path last` resumes from, also rebuilt whole as a user loads it
                TheWorld.from_pretrained(str(folder))
        except Exception as err:
            problems.append(f"local {folder.name}: {err!r}")
    files = hub.files(HUB_REPO)
    folders = sorted({path.rpartition("/")[0] for path in files if path.endswith(WEIGHTS_NAME)})
    for folder in folders:
        prefix = f"{folder}/" if folder else ""
        try:
            json.loads(files[prefix + CONFIG_NAME])
            assert shapes(safetensors.torch.load(files[prefix + WEIGHTS_NAME])) == reference
            # A resumable folder must hold its training state (a missing one is a KeyError, a problem too).
            if prefix + TRAINING_STATE_NAME in files or folder.startswith(("checkpoint-", "last-checkpoint")):
                torch.load(io.BytesIO(files[prefix + TRAINING_STATE_NAME]), weights_only=True)
        except Exception as err:
            problems.append(f"hub {folder or '.'}/: {err!r}")
    return len(local), len(folders), problems


def kill_and_resume(kills: int, seed: int, demo_dir, straight_run, hub, tmp_path, figures, monkeypatch):
    rng = random.Random(seed)
    root = tmp_path / "run"
    env = hub_env(hub.url, tmp_path / "hf_home", HF_TOKEN=SECRET)
    run = [*RUN, "--trainer.default_root_dir", root, "--trainer.logger.init_args.save_dir", root]
    reference = shapes(safetensors.torch.load_file(straight_run / "checkpoints/final" / WEIGHTS_NAME))
    monkeypatch.chdir(demo_dir)  # for TheWorld.from_pretrained in unloadable_checkpoints
    kinds = [KINDS[i % len(KINDS)] for i in range(kills)]
    rng.shuffle(kinds)
    hf_done, unloadable = False, 0
    for n, wanted in enumerate(kinds):
        source, resume, start = ("scratch", [], 0) if n == 0 else resume_from(root, hub, hf_done)
        hf_done |= source == "hf"
        kind, moment, kill_point = draw_kill(rng, wanted, start)
        hub.faults = SLOW_UPLOADS if kind == "upload" else Faults()
        marker = tmp_path / f"kill-{n}.marker"
        kill_at_marker(demo_dir, [*run, *resume, *kill_point], env, marker, tmp_path / f"kill-{n}.log")
        hub.faults = Faults()

        local, remote, problems = unloadable_checkpoints(root / "checkpoints", hub, reference)
        unloadable += len(problems)
        began = started_at((tmp_path / f"kill-{n}.log").read_text())
        figures.record("kill", kind=kind, round=n, resumed_from=source, start_step=start, started_at=began,
                       moment=moment, local_checked=local, hub_checked=remote, unloadable=len(problems))
        assert problems == [], f"after a kill {moment} (round {n}): {problems}"
        assert began == start, f"round {n} was to resume from {source} at step {start} but trained from step {began}"

    source, resume, start = resume_from(root, hub, hf_done)
    hf_done |= source == "hf"
    result = fit(demo_dir, *run, *resume, env=env, fresh_interpreter=True)
    assert result.returncode == 0, result.stderr[-3000:]
    began = started_at(result.stdout + result.stderr)
    figures.record("kill", kind="none (completes)", round=len(kinds), resumed_from=source, start_step=start,
                   started_at=began, moment="-", local_checked=0, hub_checked=0, unloadable=0)
    assert began == start, f"the last run was to resume from {source} at step {start} but trained from step {began}"
    if start < MAX_STEPS:
        assert_resumed(root, straight_run, from_step=start)
    local, remote, problems = unloadable_checkpoints(root / "checkpoints", hub, reference)
    final_bytes = (root / "checkpoints/final" / WEIGHTS_NAME).read_bytes()
    hub_final_equal = hub.files(HUB_REPO)[f"final/{WEIGHTS_NAME}"] == final_bytes
    figures.record("kill_run", kills=kills, seed=seed, hf_resumes=int(hf_done), unloadable=unloadable + len(problems),
                   local_checked=local, hub_checked=remote, hub_final_equal=hub_final_equal)
    assert problems == []
    assert hf_done, "one resume came from hf://"
    assert hub_final_equal
    assert_same_weights(straight_run / "checkpoints/final", root / "checkpoints/final")
    figures.record("final_weights", equal=True, kills=kills)
    # Every resume continued the provenance files where its checkpoint's provenance.json ended.
    assert provenance(root / "checkpoints/final") == provenance(straight_run / "checkpoints/final")


def test_three_kills_in_a_row_lose_nothing(demo_dir, straight_run, hub, tmp_path, figures, monkeypatch):
    kill_and_resume(3, 0, demo_dir, straight_run, hub, tmp_path, figures, monkeypatch)


@pytest.mark.slow
def test_ten_kills_in_a_row_lose_nothing(demo_dir, straight_run, hub, tmp_path, figures, monkeypatch):
    kill_and_resume(10, 1, demo_dir, straight_run, hub, tmp_path, figures, monkeypatch)
