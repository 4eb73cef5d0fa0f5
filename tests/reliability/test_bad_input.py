"""Bad input to `theworld`: each mistake ends the run before any weight loads (a spy on every weight loader
records nothing), with one `theworld: error:` paragraph that names the field and the fix, exit code 2 for what
the config parser refuses and 1 for the rest, and no traceback; no token shows up in the output or in any file
the run wrote. How long each takes is bench/cli_startup.py's figure, not an assertion here."""

import io
import json
import os
import socket
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

import numpy as np
import pytest
import torch
import yaml
from hub_server import HubServer
from safetensors.torch import save_file
from support import data_options
from support.cli_runs import REPO
from support.cli_zygote import Zygote
from support.hub_cli import SECRET, hub_env, token_leaks, workdir

from theworld.hub import ModelSourceError, pin_base
from theworld.run_lock import hold_run_folder, lock_path

pytestmark = pytest.mark.reliability

BAD_TOKEN = "hf_BadTokenTheHubRejects_73a1c9"
GATED = "google/gemma-3-4b-it"
PUSH = ["--hub.push_to_hub", "true", "--hub.hub_model_id", "alice/x"]



@dataclass
class Case:
    args: list
    expect: list[str]  # all in the error paragraph
    exit_code: int = 1
    env: dict = field(default_factory=dict)
    command: str = "fit"  # "": `theworld` alone
    config: bool = True  # run with --config configs/demo.yaml
    absent: list[str] = field(default_factory=list)  # none in the error paragraph
    loads_weights: bool = False  # a mistake only the data shows, once the model is loaded and training


# {user} is a folder outside the run's own, like a user's config directory.
CASES = {
    "malformed-yaml": Case(["--config", "{user}/broken.yaml"], ["broken.yaml is not valid YAML", "line 2"], 2),
    "unknown-key-in-yaml": Case(["--config", "{user}/typo.yaml"],
                                ["'trainer.max_stepz'", "Did you mean --trainer.max_steps?"], 2),
    "unknown-key-on-command-line": Case(["--model.lerning_rate", "0.1"],
                                        ["--model.lerning_rate", "Did you mean --model.learning_rate?"], 2),
    # A prefix of a real option is a typo too, not an abbreviation that silently sets it.
    "truncated-key-on-command-line": Case(["--model.learning_rat", "0.1"],
                                          ["--model.learning_rat", "Did you mean --model.learning_rate?"], 2),
    "wrong-type": Case(["--trainer.max_steps", "lots"], ['"trainer.max_steps"', "int", "lots"], 2),
    "hub-strategy-typo": Case(["--hub.hub_strategy", "every-save"],
                              ['"hub.hub_strategy"', "every_save", "all_checkpoints", "Got value: every-save"], 2),
    "negative-max-steps": Case(["--trainer.max_steps", "-5"], ["trainer.max_steps=-5", "-1 for no limit"], 2),
    "batch-size-zero": Case(["--data.batch_size", "0"], ["data.batch_size=0", "at least 1"], 2),
    "dataset-not-readable": Case(["--data.source", "hf", "--data.dataset_name", "alice/no-such-dataset",
                                  "--data.train_data", "null", "--data.val_data", "null"], [
        "data.dataset_name='alice/no-such-dataset'", "Repository not found", "/datasets/alice/no-such-dataset",
        "your token (from the HF_TOKEN environment variable)"], env={"HF_TOKEN": SECRET}),
    "shards-for-the-hf-source": Case(["--data.source", "hf"], [
        "data.train_data='demo_assets/data/train-*.tar'", "matches .tar shards", "data.source: webdataset"]),
    # Every option the source cannot apply (the registry's list), named in one paragraph.
    "options-the-shards-cannot-apply": Case(data_options.cli_args("webdataset"), [
        "data.source=webdataset cannot apply", *(f"data.{o}=" for o in data_options.inapplicable("webdataset")),
        "set data.source to a source that applies them"], 2),
    "options-the-rows-cannot-apply": Case(["--data.source", "hf", *data_options.cli_args("hf")], [
        "data.source=hf cannot apply", *(f"data.{o}=" for o in data_options.inapplicable("hf"))], 2),
    "clip-threshold-on-shards-without-metadata": Case(["--data.clip_score_threshold", "0.3"], [
        "data.clip_score_threshold needs data.metadata", "clip_b32_similarity_score"], 2),
    "subset-file-unsorted": Case(["--data.subset_file", "{user}/unsorted.npy"], [
        "data.subset_file=", "unsorted.npy", "not in ascending order", "np.sort"]),
    "missing-model-folder": Case(["--model.gemma_model_name", "./nope"],
                                 ["model.gemma_model_name='./nope'", "there is no folder", "Fix the path"]),
    # Looks like a Hub id, but demo_assets/ is a folder here: a path with a typo, not something to download.
    "mistyped-model-folder": Case(["--model.gemma_model_name", "demo_assets/gemma-nope"],
                                  ["model.gemma_model_name='demo_assets/gemma-nope'", "there is no folder",
                                   "gemma-3-tiny"]),
    "missing-init-from": Case(["--model.init_from", "runs/old/checkpoints/final"],
                              ["--model.init_from runs/old/checkpoints/final", "no such folder"]),
    "missing-ckpt-path": Case(["--ckpt_path", "runs/old/checkpoints/checkpoint-40"],
                              ["--ckpt_path runs/old/checkpoints/checkpoint-40", "no such checkpoint folder",
                               "hf://user/repo"]),
    "shards-match-nothing": Case(["--data.train_data", "demo_assets/data/trian-*.tar"],
                                 ["data.train_data='demo_assets/data/trian-*.tar'", "No shards match"]),
    "predict-without-images": Case([], ["theworld predict needs the images", "--data.predict_data"],
                                   command="predict"),
    "unknown-hub-model": Case(["--model.cosmos_model_name", "nvidia/Cosmos-Nope"], [
        "model.cosmos_model_name='nvidia/Cosmos-Nope'", "no model", "Fix the path or the Hub id"]),
    "gated-gemma": Case(["--model.gemma_model_name", GATED], [
        f"model.gemma_model_name='{GATED}' is gated", "accept the licence on the model page",
        "a token of that same account", "the token from the HF_TOKEN environment variable"], env={"HF_TOKEN": SECRET}),
    "bad-token-command-line": Case([*PUSH, "--hf_token", BAD_TOKEN],
                                   ["Authentication failed", "token from --hf_token is invalid or expired"]),
    "bad-token-yaml": Case(["--config", "{user}/token.yaml"],
                           ["Authentication failed", "token from hub.hf_token is invalid or expired"]),
    "bad-token-environment": Case(PUSH, ["the HF_TOKEN environment variable is invalid or expired"],
                                  env={"HF_TOKEN": BAD_TOKEN}),
    "bad-token-yaml-top-level": Case(["--config", "{user}/top-level-token.yaml"],
                                     ["token from hf_token in the config file is invalid or expired"]),
    # A token typed where no option takes it is quoted by the parser: masked, with the option meant.
    "token-flag-with-a-dash": Case(["--hf-token", SECRET], ["--hf-token hf_***", "Did you mean --hf_token?"], 2),
    "token-flag-token": Case(["--token", SECRET], ["--token hf_***", "Did you mean --hf_token?"], 2),
    "token-flag-hub-token": Case(["--hub.token", SECRET], ["--hub.token hf_***", "Did you mean --hub.hf_token?"], 2),
    "token-key-in-yaml": Case(["--config", "{user}/hub-token.yaml"], ["'hub.token'", "Did you mean --hub.hf_token?"],
                              2),
    "token-as-a-stray-value": Case([SECRET], ["unrecognized arguments: hf_***"], 2),
    # {user}/run/checkpoints: checkpoint-4 whole; 8, 12 and 16 damaged (weights cut short, state cut short, state
    # overwritten with random bytes): the error names the damaged file and checkpoint-4.
    "truncated-weights-resume": Case(["--ckpt_path", "{user}/run/checkpoints/checkpoint-8"], [
        "checkpoint-8/model.safetensors is damaged", "before the", "previous complete checkpoint is",
        "use --ckpt_path {user}/run/checkpoints/checkpoint-4"]),
    "truncated-weights-validate": Case(["--model.init_from", "{user}/run/checkpoints/checkpoint-8"], [
        "checkpoint-8/model.safetensors is damaged", "use --model.init_from {user}/run/checkpoints/checkpoint-4"],
        command="validate"),
    "truncated-training-state": Case(["--ckpt_path", "{user}/run/checkpoints/checkpoint-12"], [
        "checkpoint-12/training_state.pt is damaged", "use --ckpt_path {user}/run/checkpoints/checkpoint-4"]),
    "random-bytes-training-state": Case(["--ckpt_path", "{user}/run/checkpoints/checkpoint-16"], [
        "checkpoint-16/training_state.pt is damaged", "use --ckpt_path {user}/run/checkpoints/checkpoint-4"],
        absent=["weights_only", "pickled"]),
    "damaged-last": Case(["--checkpoint.dirpath", "{user}/run/checkpoints", "--ckpt_path", "last"], [
        "checkpoint-16/training_state.pt is damaged", "use --ckpt_path {user}/run/checkpoints/checkpoint-4"]),
    # The guide's "download model.safetensors to ./checkpoints/from_hub, then resume from it", three ways.
    "weights-only-resume": Case(["--ckpt_path", "{user}/from_hub"], [
        "--ckpt_path {user}/from_hub holds trainable weights", "--model.init_from {user}/from_hub"]),
    "weights-only-resume-from": Case(["--resume_from", "{user}/from_hub"], [
        "--ckpt_path {user}/from_hub holds trainable weights", "--model.init_from {user}/from_hub"]),
    "weights-only-guide-config": Case(["--config", "{user}/guide-resume.json"], [
        "--ckpt_path {user}/from_hub holds trainable weights", "--model.init_from {user}/from_hub"]),
    "guide-keys-without-equivalent": Case(["--config", "{user}/guide-extra.json"], [
        "3 of its keys have no place", "num_world_steps: give 0 or null (got 4): TheWorld encodes the current frame",
        "eval_strategy: no equivalent", "trainer.val_check_interval", "hf_tokn: not a key of the guide's configs "
        "(did you mean hf_token?)"], 2, absent=["log_to_tensorboard"]),
    "config-not-utf8": Case(["--config", "{user}/latin-1.yaml"],
                            ["--config {user}/latin-1.yaml is not UTF-8 text", "byte 0xe9", "Save it as UTF-8"], 2),
    "config-empty": Case(["--config", "{user}/empty.yaml"], ["--config {user}/empty.yaml holds nothing",
                                                            "trainer:, model:, data:"], 2),
    "config-a-list": Case(["--config", "{user}/list.json"],
                          ["--config {user}/list.json holds a list, not a mapping", "trainer:, model:, data:"], 2),
    "devices-zero": Case(["--trainer.devices", "0"], ["trainer.devices=0", "CPU cores", "Give 1 to"], 2),
    # Each device is a training process: more than there are cores (4 on the 2-core CI machine).
    "devices-more-than-cores": Case(["--trainer.devices", str((os.cpu_count() or 1) + 1)], [
        f"trainer.devices={(os.cpu_count() or 1) + 1}, but this machine has {os.cpu_count()} CPU cores"], 2),
    "root-dir-not-writable": Case(["--trainer.default_root_dir", "/proc/theworld-run"], [
        "--trainer.default_root_dir /proc/theworld-run: nothing can be written in /proc",
        "a folder you can write to"]),
    "root-dir-under-a-file": Case(["--trainer.default_root_dir", "{user}/notes.txt/run"], [
        "--trainer.default_root_dir {user}/notes.txt/run: {user}/notes.txt is a file"]),
    "checkpoint-dir-under-a-file": Case(["--checkpoint.dirpath", "{user}/notes.txt/checkpoints"], [
        "--checkpoint.dirpath {user}/notes.txt/checkpoints: {user}/notes.txt is a file"]),
    "output-folder-in-use": Case(["--checkpoint.dirpath", "{user}/busy/checkpoints"], [
        "{user}/busy/checkpoints is in use by another run: pid {holder} on", "its own folder with "
        "--checkpoint.dirpath"]),
    # The lock file a killed run leaves (no process holds it) does not stop the next run: here, at batch size 0.
    "output-folder-of-a-dead-run": Case(["--checkpoint.dirpath", "{user}/abandoned/checkpoints", "--data.batch_size",
                                         "0"], ["data.batch_size=0"], 2, absent=["in use"]),
    "resume-with-other-num-workers": Case(["--ckpt_path", "{user}/two-workers/checkpoint-4", "--data.num_workers", "1"],
                                          ["saved by a run with data.num_workers=2, and this one has 1",
                                           "add --data.num_workers 2"]),
    "predict-a-non-image": Case(["--data.predict_data", "{user}/notes.txt"], [
        "data.predict_data: {user}/notes.txt is not an image", "give a folder"], command="predict"),
    "shard-of-corrupt-images": Case(["--data.train_data", "{user}/corrupt-00000.tar", "--trainer.max_steps", "2"], [
        "No usable samples", "corrupt-00000.tar", "'corrupt'"], loads_weights=True),
    "no-config": Case([], ["no config was given", "theworld fit --config configs/demo.yaml",
                           "theworld fit --config configs/datacomp.yaml"], 2, config=False),
    "no-subcommand": Case([], ["theworld fit --config configs/demo.yaml", "theworld --help"], 2, command="",
                          config=False, absent=["YAML"]),
    **({} if torch.cuda.is_available() else {"no-gpu": Case(["--trainer.accelerator", "gpu"], [
        "trainer.accelerator=gpu", "torch sees no GPU", "--trainer.accelerator cpu", "--trainer.accelerator auto"])}),
}


def write_damaged_checkpoints(folder: Path) -> None:
    """checkpoint-4 whole, then 8 (weights cut in half), 12 (training state cut in half) and 16 (training state
    overwritten with random bytes), written in that order; tiny tensors: the checks read headers only."""
    for age, step in enumerate((4, 8, 12, 16)):
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        save_file({"projector.proj.weight": torch.zeros(64, 64)}, checkpoint / "model.safetensors")
        torch.save({"global_step": step}, checkpoint / "training_state.pt")
        os.utime(checkpoint / "training_state.pt", (1e9 + age, 1e9 + age))
    for step, name in ((8, "model.safetensors"), (12, "training_state.pt")):
        path = folder / f"checkpoint-{step}" / name
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    state = folder / "checkpoint-16/training_state.pt"
    state.write_bytes(os.urandom(state.stat().st_size))
    (folder / "last").symlink_to("checkpoint-16")


def write_corrupt_shard(path: Path) -> None:
    """A WebDataset shard whose every image is random bytes (its captions whole)."""
    with tarfile.open(path, "w") as shard:
        for index in range(8):
            for suffix, data in (("jpg", os.urandom(256)), ("txt", b"a red square")):
                member = tarfile.TarInfo(f"{index:05d}.{suffix}")
                member.size = len(data)
                shard.addfile(member, io.BytesIO(data))


def write_resumable_checkpoint(folder: Path, num_workers: int) -> None:
    """Weights and a training state whose data position was saved by ``num_workers`` loader workers, laid out as
    Lightning's fit loop saves a StatefulDataLoader's state."""
    folder.mkdir(parents=True)
    save_file({"projector.proj.weight": torch.zeros(64, 64)}, folder / "model.safetensors")
    loader = {"_snapshot": {"_main_snapshot": {"_num_workers": num_workers}}}
    torch.save({"global_step": 4, "loops": {"fit_loop": {"state_dict": {"combined_loader": [loader]}}}},
               folder / "training_state.pt")


@pytest.fixture(scope="module")
def outcomes(demo_dir, tmp_path_factory):
    """Every case as its own `theworld` process, two at a time (one per core of the CI machine), forked from two
    interpreters that imported theworld and the weight spy once (support/cli_zygote.py)."""
    user = tmp_path_factory.mktemp("user_configs")
    (user / "broken.yaml").write_text("model:\n  gemma_model_name: [demo_assets/gemma-3-tiny\n")
    (user / "typo.yaml").write_text("trainer:\n  max_stepz: 3\n")
    (user / "token.yaml").write_text(yaml.safe_dump({"hub": {"push_to_hub": True, "hub_model_id": "alice/x",
                                                             "hf_token": BAD_TOKEN}}))
    (user / "top-level-token.yaml").write_text(yaml.safe_dump({"hf_token": BAD_TOKEN, "hub": {
        "push_to_hub": True, "hub_model_id": "alice/x"}}))
    (user / "hub-token.yaml").write_text(yaml.safe_dump({"hub": {"token": SECRET}}))
    write_damaged_checkpoints(user / "run/checkpoints")
    (user / "from_hub").mkdir()
    save_file({"projector.proj.weight": torch.zeros(64, 64)}, user / "from_hub/model.safetensors")
    (user / "guide-resume.json").write_text(json.dumps({"resume_from_checkpoint": str(user / "from_hub"),
                                                        "push_to_hub": False}))
    np.save(user / "unsorted.npy", np.array([(0, 2), (0, 1)], np.dtype("u8,u8")))  # a subset file out of order
    (user / "guide-extra.json").write_text(json.dumps({"_comment": "the guide's keys", "batch_size": 4,
                                                       "log_to_tensorboard": True, "eval_strategy": "steps",
                                                       "num_world_steps": 4, "hf_tokn": SECRET}))
    (user / "latin-1.yaml").write_bytes("model:\n  prompt: Décris l'image.\n".encode("latin-1"))
    (user / "empty.yaml").write_bytes(b"")
    (user / "list.json").write_text("[1, 2]")
    (user / "notes.txt").write_text("not an image")
    write_corrupt_shard(user / "corrupt-00000.tar")
    write_resumable_checkpoint(user / "two-workers/checkpoint-4", num_workers=2)
    (user / "abandoned").mkdir()
    lock_path(user / "abandoned/checkpoints").write_text("pid 4000000 on a-dead-host, started long ago\n")
    holder = hold_run_folder(user / "busy/checkpoints", "--checkpoint.dirpath")  # this process: a live holder
    hf_home = tmp_path_factory.mktemp("hf_home")
    with HubServer({SECRET: {"user": "alice", "role": "write"}}) as hub, \
            Zygote(hub_env(hub.url, hf_home), spy_weights=True) as one, \
            Zygote(hub_env(hub.url, hf_home), spy_weights=True) as other:
        hub.create_repo(GATED)
        hub.make_gated(GATED)
        zygotes = Queue()
        zygotes.put(one), zygotes.put(other)

        def attempt(name):
            cwd = workdir(demo_dir, tmp_path_factory.mktemp(name))
            case = CASES[name]
            args = [*([case.command] if case.command else []),
                    *(["--config", REPO / "configs/demo.yaml"] if case.config else []),
                    *(arg.format(user=user) for arg in case.args)]
            env = {"HF_TOKEN": None, **case.env, "THEWORLD_WEIGHT_LOG": str(cwd / "weight-loads.log")}
            zygote = zygotes.get()
            try:
                return name, (zygote.run(args, cwd, env), cwd)
            finally:
                zygotes.put(zygote)

        with ThreadPoolExecutor(2) as pool, holder:
            yield {**dict(pool.map(attempt, CASES)), "user": user}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_fails_fast_with_one_clear_paragraph(outcomes, name, figures):
    (result, cwd), user = outcomes[name], outcomes["user"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("theworld: error: ")]
    figures.record("bad_input", case=name, exit_code=result.returncode, seconds=round(result.seconds, 1),
                   error=errors[0] if errors else None)
    assert result.returncode == CASES[name].exit_code, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    for text in CASES[name].expect:
        assert text.format(user=user, holder=os.getpid()) in errors[0]
    for text in CASES[name].absent:
        assert text not in errors[0]
    assert "Traceback" not in result.stderr
    assert (cwd / "weight-loads.log").exists() == CASES[name].loads_weights
    assert not (cwd / "runs/demo/checkpoints").exists()
    leaks = token_leaks(SECRET, result, cwd) + token_leaks(BAD_TOKEN, result, cwd)
    figures.record("token_scan", case=name, files=sum(p.is_file() for p in cwd.rglob("*")), hub_files=0,
                   leaks=len(leaks))
    assert leaks == []


def test_the_weight_spy_sees_the_loads_of_a_run_that_goes_ahead(demo_dir, tmp_path):
    """What the check above relies on: a command that does load the model is recorded, in a run forked the same way."""
    cwd = workdir(demo_dir, tmp_path / "run")
    log = cwd / "weight-loads.log"
    with Zygote(hub_env("http://127.0.0.1:9", tmp_path / "hf"), spy_weights=True) as zygote:
        result = zygote.run(["validate", "--config", REPO / "configs/demo.yaml", "--trainer.limit_val_batches", "1",
                             "--model.val_captions", "0"], cwd, env={"THEWORLD_WEIGHT_LOG": str(log)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TheWorld._load_base" in log.read_text() and "safe_open" in log.read_text()


def test_a_model_id_comes_from_the_local_cache_when_the_hub_cannot_be_asked(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelSourceError, match="not in the local Hugging Face cache and cannot be downloaded"):
        pin_base(GATED, "model.gemma_model_name", endpoint=dead)
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--google--gemma-3-4b-it" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--google--gemma-3-4b-it" / "refs").mkdir()
    (tmp_path / "models--google--gemma-3-4b-it" / "refs" / "main").write_text(commit)
    assert pin_base(GATED, "model.gemma_model_name", endpoint=dead) == (GATED, commit)
