"""Multi-process training on CPU (gloo): DDP and FSDP match one process, resume exactly, and sync the Hub once.

Every run trains on one shard with no loader workers, so a 2-rank run with batch 4 sees, step by
step, exactly the 8 samples a 1-process run with batch 8 sees: the shards < consumers fallback
deals the shard's samples alternately to the two ranks. Launchers covered: Lightning's own
(``--trainer.devices 2``), torchrun, and SLURM (two tasks on two simulated nodes).
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from support.accounts import SECRET
from support.cli_runs import CLI, assert_ended, loader_workers, provenance, theworld

from theworld import TheWorld
from theworld.testing.synthetic import write_webdataset_shards

REPO = Path(__file__).resolve().parents[1]
DEMO = ["--config", REPO / "configs/demo.yaml"]
DDP = ["--config", REPO / "configs/ddp.yaml", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
STEPS = ["--trainer.max_steps", "8", "--checkpoint.every_n_train_steps", "4", "--checkpoint.save_top_k", "-1",
         "--trainer.limit_val_batches", "0", "--data.num_workers", "0"]
TOKEN = SECRET  # alice's, on the local Hub of conftest.py
# Set by launchers (torchrun, SLURM, an outer Lightning run): a child must not mistake itself for a rank of those.
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR",
                 "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> Path:
    """One training shard, enough for 8 steps of 8 samples."""
    return Path(write_webdataset_shards(tmp_path_factory.mktemp("shard"), 1, 80, seed=7)[0])


def clean_env(**extra) -> dict:
    """Launcher variables of an outer run removed; HF_TOKEN too: the Hub tests pass theirs with --hf_token."""
    inherited = [k for k in os.environ if k in (*LAUNCHER_VARS, "HF_TOKEN") or k.startswith("SLURM_")]
    return {**dict.fromkeys(inherited), **extra}


def run_args(root: Path, shard: Path, *args) -> list[str]:
    """The CLI arguments of a short demo run writing into ``root`` and recording the keys it trains on."""
    return [*map(str, DEMO), *STEPS, "--data.train_data", str(shard),
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root),
            "--trainer.callbacks+=record_keys.RecordKeys", "--trainer.callbacks.init_args.out_dir", str(root / "keys"),
            *map(str, args)]


def fit(demo_dir: Path, args: list[str], launcher: list[str] | None = None, env: dict | None = None):
    """``theworld fit`` (under ``launcher``, e.g. torchrun); returns the CompletedProcess with ``.seconds``."""
    program = [*launcher, "-m", "theworld.lit.cli"] if launcher else CLI
    result = theworld("fit", *args, cwd=demo_dir, env=clean_env(**(env or {})), program=program, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def losses(root: Path) -> dict[int, float]:
    with open(sorted(root.glob("logs/version_*/metrics.csv"))[-1]) as fh:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")}


def keys_by_step(root: Path) -> dict[int, list[str]]:
    """Step -> the samples all ranks together trained on at that step (sorted)."""
    steps: dict[int, list[str]] = {}
    for path in root.glob("keys/keys-rank*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            steps.setdefault(record["step"], []).extend(record["keys"])
    return {step: sorted(keys) for step, keys in steps.items()}


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5):
    # Without the global token mean the 2-rank weights drift ~1e-3 from the 1-process ones in 8 steps.
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == wb[key].dtype and torch.allclose(wa[key], wb[key], atol=atol), key


def assert_same_optimizer_state(a: Path, b: Path):
    sa, sb = (torch.load(p / "training_state.pt", weights_only=False)["optimizer_states"][0] for p in (a, b))
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for index, state in sa["state"].items():
        for name, value in state.items():
            assert torch.allclose(value, sb["state"][index][name], atol=1e-5), (index, name)


@pytest.fixture(scope="module")
def one_process(demo_dir, shard, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one_process")
    fit(demo_dir, run_args(root, shard, "--data.batch_size", "8"))
    return root


@pytest.fixture(scope="module")
def two_ranks(demo_dir, shard, tmp_path_factory) -> Path:
    """Lightning's own launcher: ``--trainer.devices 2`` with configs/ddp.yaml, global batch 2 x 4."""
    root = tmp_path_factory.mktemp("two_ranks")
    fit(demo_dir, run_args(root, shard, *DDP, "--data.batch_size", "4"))
    return root


@pytest.mark.parametrize("unfrozen", [{}, {"freeze_gemma_language": False}, {"freeze_gemma_vision": False}])
def test_every_trainable_parameter_gets_a_gradient(tiny_models, unfrozen):
    """What lets DDP run without find_unused_parameters: no trainable tensor is left out of a step.

    (An unfrozen Cosmos VAE is the exception: its temporal convolutions never see a one-frame video.)
    """
    model = TheWorld(*tiny_models, world_image_size=64, **unfrozen)
    proc = model.processor
    batch = proc.collate([proc(Image.new("RGB", (64, 64), (200, 20, 20)), caption="a red square")])
    model(**batch)["loss"].backward()
    assert [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_ddp_matches_one_process_with_the_same_global_batch(one_process, two_ranks):
    for folder in ("checkpoint-4", "checkpoint-8", "final"):
        assert_same_weights(one_process / "checkpoints" / folder, two_ranks / "checkpoints" / folder)
    assert_same_optimizer_state(one_process / "checkpoints/checkpoint-8", two_ranks / "checkpoints/checkpoint-8")
    # The logged loss is the global token mean, not rank 0's.
    assert losses(two_ranks) == pytest.approx(losses(one_process), abs=1e-5)
    # Step by step the two ranks together train on the samples of the one process, none twice.
    assert keys_by_step(two_ranks) == keys_by_step(one_process)
    # The provenance files say the same: each row names the step and the rank that trained the sample.
    rows = provenance(two_ranks / "checkpoints/final")
    for rank in (0, 1):
        recorded = [json.loads(line) for line in (two_ranks / f"keys/keys-rank{rank}.jsonl").read_text().splitlines()]
        assert [(step, key) for step, r, key in rows if r == rank] == [
            (record["step"], key) for record in recorded for key in record["keys"]]
    steps = [row[0] for row in provenance(two_ranks / "checkpoints/checkpoint-4")]
    assert steps == [step for step in range(4) for _ in range(8)]
    seen = [key for keys in keys_by_step(two_ranks).values() for key in keys]
    assert len(seen) == len(set(seen)) == 64
    # One writer: rank 0 alone wrote the checkpoints and the logs.
    assert len(list(two_ranks.glob("logs/version_*"))) == 1


def test_resume_on_two_slurm_nodes_continues_exactly(two_ranks, demo_dir, shard, tmp_path):
    """Resumes the 2-GPU run as 2 nodes x 1 task under SLURM: each rank gets its own data position back."""
    args = run_args(tmp_path, shard, "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
                    "--trainer.num_nodes", "2", "--trainer.devices", "1", "--data.batch_size", "4",
                    "--ckpt_path", two_ranks / "checkpoints/checkpoint-4")
    slurm = dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="theworld", SLURM_NTASKS="2", SLURM_NNODES="2",
                 SLURM_NTASKS_PER_NODE="1", SLURM_LOCALID="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    tasks = [
        theworld("fit", *args, cwd=demo_dir, env=clean_env(**slurm, SLURM_PROCID=str(rank), SLURM_NODEID=str(rank)),
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for rank in range(2)
    ]
    for task in tasks:
        _, stderr = task.communicate(timeout=300)
        assert task.returncode == 0, stderr[-4000:]
    assert_same_weights(two_ranks / "checkpoints/final", tmp_path / "checkpoints/final", atol=1e-6)
    straight = keys_by_step(two_ranks)
    assert keys_by_step(tmp_path) == {step: straight[step] for step in range(4, 8)}
    assert provenance(tmp_path / "checkpoints/final") == provenance(two_ranks / "checkpoints/final")
    assert losses(tmp_path) == pytest.approx({s: v for s, v in losses(two_ranks).items() if s >= 4}, abs=1e-6)


def test_sigterm_to_the_whole_job_saves_the_step_and_resumes_exactly(two_ranks, demo_dir, shard, tmp_path):
    """SLURM and ``timeout`` signal every process of the job: both ranks, their loader workers and what starts
    those. Held inside step 3 until the signal is in, the run saves one checkpoint of step 3 (off the save
    schedule) on both ranks, exits 143 with the resume command, and leaves no process behind; ``--ckpt_path last``
    trains steps 3-7 only, with the uninterrupted run's losses and weights (one loader worker per rank reads what
    the uninterrupted run read without workers)."""
    marker, release, log = tmp_path / "in-step-3", tmp_path / "go-on", tmp_path / "interrupted.log"
    args = run_args(tmp_path, shard, *DDP, "--data.batch_size", "4", "--data.num_workers", "1")
    pause = ["--trainer.callbacks+=kill_points.PauseInStep", "--trainer.callbacks.init_args.at_step", "2",
             "--trainer.callbacks.init_args.marker", marker, "--trainer.callbacks.init_args.release", release]
    with open(log, "w") as out:
        proc = theworld("fit", *args, *pause, cwd=demo_dir, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True)
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.05)
        others = loader_workers(proc.pid)  # rank 1, the loader workers, the forkservers
        assert len(others) >= 3, others
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        release.touch()
        assert proc.wait(timeout=300) == 128 + signal.SIGTERM, log.read_text()[-4000:]
    text = log.read_text()
    assert "theworld: stopped by SIGTERM after step 3" in text and "--ckpt_path last" in text
    assert "Traceback" not in text, text[-4000:]
    assert (tmp_path / "checkpoints/last").resolve().name == "checkpoint-3"
    assert_ended(others)

    fit(demo_dir, [*args, "--ckpt_path", "last"])
    assert sorted(losses(tmp_path)) == list(range(3, 8)), "the resume starts at the checkpoint's step"
    assert losses(tmp_path) == pytest.approx({s: v for s, v in losses(two_ranks).items() if s >= 3}, abs=1e-6)
    assert_same_weights(two_ranks / "checkpoints/final", tmp_path / "checkpoints/final", atol=1e-6)
    assert provenance(tmp_path / "checkpoints/final") == provenance(two_ranks / "checkpoints/final")


def test_fsdp_saves_the_single_device_format_and_resumes(two_ranks, demo_dir, shard, tmp_path, tmp_path_factory):
    """FSDP (torch shards over gloo on CPU): trainable tensors gathered on rank 0, same files as DDP's."""
    fsdp = [*DDP, "--config", REPO / "configs/fsdp.yaml", "--trainer.precision", "32-true", "--data.batch_size", "4"]
    straight = tmp_path_factory.mktemp("fsdp")
    fit(demo_dir, run_args(straight, shard, *fsdp))
    for folder in ("checkpoint-4", "final"):
        assert_same_weights(two_ranks / "checkpoints" / folder, straight / "checkpoints" / folder)
    assert_same_optimizer_state(two_ranks / "checkpoints/checkpoint-8", straight / "checkpoints/checkpoint-8")

    fit(demo_dir, run_args(tmp_path, shard, *fsdp, "--ckpt_path", straight / "checkpoints/checkpoint-4"))
    assert_same_weights(straight / "checkpoints/final", tmp_path / "checkpoints/final", atol=1e-6)


# ------------------------------------------------------------------------------------------- Hub
def hub_args(root: Path, shard: Path, repo: str, *args) -> list[str]:
    return run_args(root, shard, *DDP, "--data.batch_size", "4", "--hub.push_to_hub", "true",
                    "--hub.hub_model_id", repo, "--hf_token", TOKEN, *args)


def test_two_ranks_push_once_and_resume_from_the_hub(hub, two_ranks, demo_dir, shard, tmp_path):
    env = dict(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"))
    pushed = tmp_path / "pushed"
    fit(demo_dir, hub_args(pushed, shard, "alice/ddp", "--hub.hub_strategy", "all_checkpoints"),
        launcher=torchrun(), env=env)
    assert_same_weights(two_ranks / "checkpoints/final", pushed / "checkpoints/final", atol=1e-6)
    # One set of pushes (a newer save may supersede a queued one), none twice.
    messages = [c["message"] for c in hub.commits("alice/ddp")][1:]
    assert messages[-1] == "End of training" and len(messages) == len(set(messages)), messages
    assert set(messages[:-1]) <= {"Training in progress, step 4", "Training in progress, step 8"}, messages
    whoami = [path for _, path, _ in hub.request_log if path.endswith("/whoami-v2")]
    assert whoami == ["/api/whoami-v2"], "only rank 0 talks to the Hub"

    resumed = tmp_path / "resumed"
    from_hub = ["--data.batch_size", "4", "--ckpt_path", "hf://alice/ddp/checkpoint-4"]
    fit(demo_dir, run_args(resumed, shard, *DDP, *from_hub), launcher=torchrun(), env=env)
    assert_same_weights(two_ranks / "checkpoints/final", resumed / "checkpoints/final", atol=1e-6)
    straight = keys_by_step(two_ranks)
    assert keys_by_step(resumed) == {step: straight[step] for step in range(4, 8)}
    # The first 4 steps' rows came down from the Hub with the checkpoint.
    assert provenance(resumed / "checkpoints/final") == provenance(two_ranks / "checkpoints/final")


def test_a_final_push_slower_than_the_collective_timeout_ends_cleanly_on_every_rank(hub, demo_dir, shard, tmp_path):
    """Rank 0 waits for the final push after the last collective: the other ranks are not held in one."""
    from hub_server import Faults

    timeout_s, push_s = 15, 25
    strategy = tmp_path / "short_timeout.yaml"
    strategy.write_text(f"trainer:\n  strategy:\n    init_args:\n      timeout: '0:00:{timeout_s}'\n")
    wandb = tmp_path / "wandb.yaml"
    wandb.write_text(f"trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.WandbLogger\n    init_args:\n"
                     f"      offline: true\n      project: theworld-ddp\n      save_dir: {tmp_path}\n")
    hub.faults = Faults(latency_s=push_s, paths=r"/commit/")
    result = fit(demo_dir, hub_args(tmp_path, shard, "alice/slow", "--config", strategy, "--config", wandb,
                                    "--hub.hub_strategy", "end", "--trainer.max_steps", "2"),
                 launcher=torchrun(), env=dict(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home")))
    assert result.seconds > push_s
    assert [c["message"] for c in hub.commits("alice/slow")][1:] == ["End of training"]
    # W&B: one run, from rank 0.
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
