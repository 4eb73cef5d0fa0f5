"""Each kind of extension is one file and one registration line, and the real command takes it: a Hub strategy
(support/toy_hub_strategy.py), a data source (support/toy_data_source.py) and a benchmark format
(support/toy_format.py), each imported before `theworld` parses its config, as a user's own module would be."""

import json
import os
import sys

import pytest
from datasets import Features, Sequence, Value
from datasets import Image as ImageFeature
from PIL import Image
from support.accounts import SECRET
from support.benchmark_folders import hand_total, picture, write_config, write_hub_folder
from support.cli_runs import REPO, provenance, theworld
from support.hub_cli import hub_env, workdir

DEMO = ["--config", REPO / "configs/demo.yaml"]
TWO_STEPS = ["--trainer.max_steps", "2", "--checkpoint.every_n_train_steps", "1", "--data.batch_size", "4"]


def with_extension(module: str) -> list[str]:
    """`theworld` in a fresh interpreter that imports ``module`` (it registers the extension) before the CLI runs."""
    return [sys.executable, "-c", f"import {module}\nfrom theworld.lit.cli import main\nmain()"]


def test_a_hub_strategy_registered_in_one_file_is_pushed_carded_and_estimated(demo_dir, hub, tmp_path):
    cwd = workdir(demo_dir, tmp_path / "run")
    strategy = ["--hub.hub_strategy", "end_with_state"]
    run = theworld("fit", *DEMO, *TWO_STEPS, "--hf_token", SECRET, "--hub.push_to_hub", "true", "--hub.hub_model_id",
                   "alice/toy", *strategy, cwd=cwd, env=hub_env(hub.url, tmp_path / "hf_home"),
                   program=with_extension("toy_hub_strategy"), timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    # Saves at steps 1 and 2, pushed once: the final push, with the last resumable folder.
    assert [c["message"] for c in hub.commits("alice/toy")[1:]] == ["End of training"]
    files = hub.files("alice/toy")
    local = cwd / "runs/demo/checkpoints"
    assert files["last-checkpoint/training_state.pt"] == (local / "checkpoint-2/training_state.pt").read_bytes()
    assert files["final/model.safetensors"] == (local / "final/model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "pushed once, at the end of training, with its last resumable checkpoint" in card
    assert "--ckpt_path hf://alice/toy`" in card
    estimate = theworld("estimate", *DEMO, *strategy, "--json", cwd=cwd, program=with_extension("toy_hub_strategy"))
    assert estimate.returncode == 0, estimate.stderr[-3000:]
    assert set(json.loads(estimate.stdout)["push_bytes"]) == {"model.safetensors",
                                                              "last-checkpoint/ (weights + training state)"}
    # Without its registration the parser refuses the name, listing the registered ones.
    unknown = theworld("estimate", *DEMO, *strategy, cwd=cwd)
    assert unknown.returncode == 2
    assert "hub.hub_strategy" in unknown.stderr and "'every_save', 'checkpoint', 'all_checkpoints', 'end'" in (
        " ".join(unknown.stderr.split()))


def write_rows(folder, count: int):
    """``folder/rows.jsonl``: ``count`` rows of the toy source, each a coloured square and its caption."""
    folder.mkdir()
    colours = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 30, 230)}
    lines = []
    for number in range(count):
        name, rgb = list(colours.items())[number % len(colours)]
        Image.new("RGB", (48, 48), rgb).save(folder / f"{number}.png")
        lines.append(json.dumps({"key": f"row-{number}", "image": f"{number}.png", "text": f"a {name} square"}))
    (folder / "rows.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "rows.jsonl"


def test_a_data_source_registered_in_one_file_trains_in_loader_workers_and_is_estimated(demo_dir, tmp_path):
    cwd = workdir(demo_dir, tmp_path / "run")
    rows = write_rows(tmp_path / "data", 8)
    source = ["--data.source", "jsonl", "--data.train_data", rows, "--data.val_data", "null"]
    run = theworld("fit", *DEMO, *TWO_STEPS, *source, "--data.num_workers", "2", cwd=cwd,
                   program=with_extension("toy_data_source"))
    assert run.returncode == 0, run.stderr[-4000:]
    # Both steps' samples came from the file, each row once (split between the two workers).
    trained = [key for _, _, key in provenance(cwd / "runs/demo/checkpoints/final")]
    assert sorted(trained) == sorted(f"row-{n}" for n in range(8))
    estimate = theworld("estimate", *DEMO, *source, "--json", cwd=cwd, program=with_extension("toy_data_source"))
    assert estimate.returncode == 0, estimate.stderr[-3000:]
    assert json.loads(estimate.stdout)["loader_rate"] == {
        "value": 120.0, "source": "toy JSON-lines source: assumed, not measured"}


def test_a_benchmark_format_registered_in_one_file_runs_through_the_command(tmp_path, tiny_models):
    features = Features({"image": ImageFeature(), "question": Value("string"), "choices": Sequence(Value("string")),
                         "answer": Value("string"), "category": Value("string")})
    rows = [{"image": picture(n), "question": f"Is the bar left ({n})?", "choices": ["yes", "no"],
             "answer": ["(A)", "(B)"][n % 2], "category": ["bars", "bars", "colours"][n % 3]} for n in range(6)]
    folder = write_hub_folder(tmp_path / "toy", "test", {"default": (rows, features)})
    run = theworld("evaluate", "--config", write_config(tmp_path, tiny_models), "--benchmark", folder, "--conditions",
                   "[full, shuffled_world]", "--output", tmp_path / "toy.json", cwd=tmp_path,
                   program=with_extension("toy_format"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "protocol official: toy: its prompt, a generated answer, its leading letter" in run.stdout
    result = json.loads((tmp_path / "toy.json").read_text())
    assert result["format"] == "toy" and {s["stratum"] for s in result["samples"]} == {"bars", "colours"}
    rows_by_task = {a["task"] for a in result["accuracies"]}
    assert rows_by_task == {"bars", "colours", "all"}
    for condition in result["conditions"]:
        total = next(a for a in result["accuracies"] if a["task"] == "all" and a["condition"] == condition)
        by_hand = hand_total(result["samples"], condition, {"bars": 1 / 2, "colours": 1 / 2})
        assert total["accuracy"] == pytest.approx(by_hand)


def installed_package(site, entry_points: str, name: str = "toy-extensions"):
    """``site`` holding the metadata of an installed package named ``name`` with ``entry_points`` (the text of its
    entry_points.txt), as pip leaves it in site-packages; the modules it names are in tests/support."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return {"PYTHONPATH": os.pathsep.join(map(str, [site, REPO / "tests/support", REPO]))}


def test_an_installed_package_adds_its_extensions_to_the_theworld_command(demo_dir, tmp_path):
    """The plain `theworld` command, nothing imported by hand: a package naming its module in the
    `theworld.extensions` entry-point group has its strategy taken; a module that fails to import is one error
    paragraph naming the package, not a traceback."""
    cwd = workdir(demo_dir, tmp_path / "run")
    env = installed_package(tmp_path / "site", "[theworld.extensions]\nend_with_state = toy_hub_strategy\n")
    estimate = theworld("estimate", *DEMO, "--hub.hub_strategy", "end_with_state", "--json", cwd=cwd, env=env,
                        fresh_interpreter=True)
    assert estimate.returncode == 0, estimate.stderr[-3000:]
    assert set(json.loads(estimate.stdout)["push_bytes"]) == {"model.safetensors",
                                                              "last-checkpoint/ (weights + training state)"}
    broken = installed_package(tmp_path / "broken", "[theworld.extensions]\nmissing = toy_no_such_module\n",
                               name="broken-extension")
    failed = theworld("estimate", *DEMO, cwd=cwd, env=broken, fresh_interpreter=True)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert "theworld: error: The theworld extension 'missing' of broken-extension (toy_no_such_module) failed to " \
           "import: ModuleNotFoundError" in failed.stderr, failed.stderr[-3000:]
