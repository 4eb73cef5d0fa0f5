"""What each ``hub_strategy`` pushes and prunes, as pure functions over a checkpoint folder layout and a set of
remote paths: no Hub, no Lightning (tests/test_hub_sync.py checks the same in real runs); and what the strategy table
gives the card, the estimate and the CLI."""

import subprocess
import sys
import typing

import pytest

from theworld.hub import strategies
from theworld.hub.commits import CommitPlan, plan_commit, repo_files
from theworld.hub.strategies import STRATEGIES, resumable_names
from theworld.layout import SavedCheckpoint
from theworld.provenance import Delta, History

RESUME = ("model.safetensors", "config.json", "training_state.pt")
WEIGHTS = ("model.safetensors", "config.json")


def delta_name(step: int) -> str:
    return f"stage-0-steps-{step - 1:06d}-{step:06d}.parquet"


def checkpoint(root, name: str, step: int, files=RESUME, provenance=True):
    """``root/name`` holding ``files``, and a provenance.json naming the deltas of steps 2, 4... up to ``step``
    (written in ``root/provenance/``, as TrainableCheckpoint lays them out)."""
    folder = root / name
    folder.mkdir(parents=True)
    for file in files:
        (folder / file).write_bytes(f"{name}/{file}".encode())
    if provenance:
        deltas = tuple(Delta(delta_name(s), 0, s - 1, s, 4) for s in range(2, step + 1, 2))
        (root / "provenance").mkdir(exist_ok=True)
        for delta in deltas:
            (root / "provenance" / delta.name).write_bytes(b"rows")
        (folder / "provenance.json").write_text(History(0, step + 1, deltas).to_json())
    return folder


@pytest.fixture
def local(tmp_path):
    """checkpoints/ after a save of step 6 with save_top_k=2 (checkpoint-2 rotated away), and final/."""
    root = tmp_path / "checkpoints"
    return {name: checkpoint(root, name, step, files) for name, step, files in [
        ("checkpoint-4", 4, RESUME), ("checkpoint-6", 6, RESUME), ("final", 6, WEIGHTS)]}


def in_folder(folder: str, names=(*RESUME, "provenance.json")) -> set[str]:
    return {f"{folder}/{name}" for name in names}


ROOT = {"model.safetensors", "config.json", "provenance.json"}
DELTAS = {f"provenance/{delta_name(s)}" for s in (2, 4, 6)}


def test_the_config_accepts_exactly_the_strategies_of_the_table():
    assert typing.get_args(strategies.Name) == tuple(STRATEGIES)
    rows = {name: (s.pushes_intermediate_saves, s.last_checkpoint, s.checkpoint_folders)
            for name, s in STRATEGIES.items()}
    assert rows == {
        "every_save": (True, False, False),
        "checkpoint": (True, True, False),
        "all_checkpoints": (True, True, True),
        "end": (False, False, False),  # only the final push
    }


@pytest.mark.parametrize(("strategy", "beside_the_root"), [
    ("every_save", set()),
    ("checkpoint", in_folder("last-checkpoint")),
    ("all_checkpoints", in_folder("last-checkpoint") | in_folder("checkpoint-4") | in_folder("checkpoint-6")),
])
def test_an_intermediate_push_holds_the_save_and_what_its_strategy_adds(local, strategy, beside_the_root):
    saved = SavedCheckpoint(step=6, path=local["checkpoint-6"], final=False,
                            kept=(local["checkpoint-4"], local["checkpoint-6"]))
    files = repo_files(STRATEGIES[strategy], saved)
    assert set(files) == ROOT | DELTAS | beside_the_root
    assert files["model.safetensors"] == local["checkpoint-6"] / "model.safetensors"
    if "last-checkpoint/training_state.pt" in files:  # the save itself
        assert files["last-checkpoint/training_state.pt"] == local["checkpoint-6"] / "training_state.pt"
    if "checkpoint-4/training_state.pt" in files:
        assert files["checkpoint-4/training_state.pt"] == local["checkpoint-4"] / "training_state.pt"
    assert files[f"provenance/{delta_name(2)}"] == local["final"].parent / "provenance" / delta_name(2)


@pytest.mark.parametrize(("strategy", "beside_the_root"), [
    ("every_save", set()),
    ("end", set()),
    ("checkpoint", in_folder("last-checkpoint")),
    ("all_checkpoints", in_folder("last-checkpoint") | in_folder("checkpoint-4") | in_folder("checkpoint-6")),
])
def test_the_final_push_holds_final_at_the_root_and_in_final_and_the_newest_resumable_folder(local, strategy,
                                                                                            beside_the_root):
    saved = SavedCheckpoint(step=6, path=local["final"], final=True, kept=(local["checkpoint-4"], local["checkpoint-6"]))
    files = repo_files(STRATEGIES[strategy], saved)
    assert set(files) == ROOT | in_folder("final", (*WEIGHTS, "provenance.json")) | DELTAS | beside_the_root
    assert files["model.safetensors"] == files["final/model.safetensors"] == local["final"] / "model.safetensors"
    if "last-checkpoint/training_state.pt" in files:
        assert files["last-checkpoint/training_state.pt"] == local["checkpoint-6"] / "training_state.pt"


def test_a_final_push_without_a_resumable_folder_has_no_last_checkpoint(local):
    saved = SavedCheckpoint(step=6, path=local["final"], final=True, kept=())
    assert not any(rel.startswith("last-checkpoint/") for rel in repo_files(STRATEGIES["checkpoint"], saved))


def test_a_folder_written_before_provenance_pushes_no_provenance(tmp_path):
    old = checkpoint(tmp_path / "checkpoints", "checkpoint-2", 2, provenance=False)
    saved = SavedCheckpoint(step=2, path=old, final=False, kept=(old,))
    assert set(repo_files(STRATEGIES["all_checkpoints"], saved)) == {
        "model.safetensors", "config.json", *in_folder("last-checkpoint", RESUME), *in_folder("checkpoint-2", RESUME)}


# ----------------------------------------------------------------------------------------- commit plans
WRITTEN = {"README.md", "training_args.json", "data_yield.json", "samples/00.png", "samples/captions.json"}
USER_FILES = {"paper.pdf", "notes/todo.md", "eval/blink.json", ".gitattributes"}


def staged_push(strategy: str) -> set[str]:
    """What a push of step 6 (checkpoint-4 and checkpoint-6 kept locally) stages under ``strategy``."""
    extra = {"every_save": set(), "checkpoint": in_folder("last-checkpoint"),
             "all_checkpoints": in_folder("last-checkpoint") | in_folder("checkpoint-4") | in_folder("checkpoint-6")}
    return ROOT | DELTAS | WRITTEN | extra[strategy]


def remote_repo() -> set[str]:
    """The repo after the push of step 4 (all_checkpoints, checkpoint-2 and -4 then kept), a finished earlier run's
    final/, a gallery of two images, event files, and the user's own files."""
    return (ROOT | WRITTEN | {"samples/01.png", "runs/events.out.tfevents.1"}
            | {f"provenance/{delta_name(s)}" for s in (2, 4)} | {"provenance/from-an-older-run.parquet"}
            | in_folder("last-checkpoint") | in_folder("checkpoint-2") | in_folder("checkpoint-4")
            | in_folder("final", (*WEIGHTS, "provenance.json")) | USER_FILES)


@pytest.mark.parametrize(("strategy", "deleted"), [
    # The gallery and the event files are replaced by every push, whatever the strategy.
    ("every_save", {"samples/01.png", "runs/events.out.tfevents.1"}),
    ("checkpoint", {"samples/01.png", "runs/events.out.tfevents.1"}),
    # all_checkpoints prunes checkpoint-2/, which the local rotation removed.
    ("all_checkpoints", {"samples/01.png", "runs/events.out.tfevents.1"} | in_folder("checkpoint-2")),
])
def test_each_strategy_deletes_only_what_it_replaces_or_prunes(strategy, deleted):
    staged, remote = staged_push(strategy), remote_repo()
    plan = plan_commit(STRATEGIES[strategy], remote, staged)
    assert set(plan.delete) == deleted and list(plan.delete) == sorted(plan.delete)
    kept = remote - set(plan.delete)
    assert USER_FILES <= kept, "a user's files in the repo are never deleted"
    assert {p for p in remote if p.startswith(("provenance/", "final/"))} <= kept, "provenance deltas and final/ stay"
    assert not set(plan.delete) & staged


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints"])
def test_what_never_changes_once_on_the_hub_is_not_sent_again(strategy):
    """checkpoint-N/ folders the Hub holds whole and provenance deltas it has are left out; everything else staged
    (last-checkpoint/ and the root included, whose bytes change each push) is sent."""
    staged = staged_push(strategy)
    plan = plan_commit(STRATEGIES[strategy], remote_repo(), staged)
    unchanged = {f"provenance/{delta_name(s)}" for s in (2, 4)}
    if strategy == "all_checkpoints":
        unchanged |= in_folder("checkpoint-4")
    assert plan.send == staged - unchanged
    assert f"provenance/{delta_name(6)}" in plan.send and "model.safetensors" in plan.send


def test_a_checkpoint_folder_the_hub_holds_only_in_part_is_sent_whole():
    remote = {"checkpoint-4/model.safetensors", "checkpoint-4/config.json"}  # an upload cut short by hand
    staged = in_folder("checkpoint-4", RESUME)
    assert plan_commit(STRATEGIES["all_checkpoints"], remote, staged) == CommitPlan(send=frozenset(staged), delete=())


def test_last_checkpoint_is_replaced_whole_and_only_by_a_push_that_holds_one():
    """A file of the old last-checkpoint/ the new one lacks (provenance.json of a folder from before it existed) goes;
    a push without last-checkpoint/ (every_save, or a final push with no resumable folder) leaves the old one."""
    remote = in_folder("last-checkpoint") | ROOT
    with_last = ROOT | in_folder("last-checkpoint", RESUME)
    assert plan_commit(STRATEGIES["checkpoint"], remote, with_last).delete == ("last-checkpoint/provenance.json",)
    assert plan_commit(STRATEGIES["checkpoint"], remote, ROOT).delete == ()
    assert plan_commit(STRATEGIES["every_save"], remote, ROOT).delete == ()


def test_a_strategy_without_checkpoint_folders_leaves_those_on_the_hub():
    """Switching a repo from all_checkpoints to checkpoint (or every_save) prunes none of its checkpoint-N/."""
    remote = ROOT | in_folder("checkpoint-2") | in_folder("checkpoint-4")
    for name in ("every_save", "checkpoint", "end"):
        assert plan_commit(STRATEGIES[name], remote, ROOT).delete == ()
    assert set(plan_commit(STRATEGIES["all_checkpoints"], remote, ROOT).delete) == remote - ROOT


def test_repo_files_and_the_plan_together_for_all_checkpoints(local):
    """The push of step 6 against the repo after step 4: checkpoint-2/ pruned, checkpoint-4/ and the deltas of steps 2
    and 4 not sent again, checkpoint-6/ and the delta of step 6 sent."""
    strategy = STRATEGIES["all_checkpoints"]
    saved = SavedCheckpoint(step=6, path=local["checkpoint-6"], final=False,
                            kept=(local["checkpoint-4"], local["checkpoint-6"]))
    staged = set(repo_files(strategy, saved)) | WRITTEN
    plan = plan_commit(strategy, remote_repo(), staged)
    assert {p for p in plan.send if p.startswith(("checkpoint-", "provenance/"))} == (
        in_folder("checkpoint-6") | {f"provenance/{delta_name(6)}"})
    assert set(plan.delete) == {"samples/01.png", "runs/events.out.tfevents.1"} | in_folder("checkpoint-2")



def test_commit_planning_runs_without_lightning():
    code = "import sys, theworld.hub.commits\nprint('lightning' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "False"


# --------------------------------------------------------------------------- what the table tells the others
def test_each_card_text_says_how_to_train_on_from_what_its_strategy_pushes():
    for name, strategy in STRATEGIES.items():
        text = strategy.card("alice/run")
        assert "{" not in text.replace("{step}", ""), f"{name}: a phrase was left unfilled"
        resumes = "--ckpt_path hf://alice/run`" in text
        assert resumes == strategy.last_checkpoint, name
        assert ("--model.init_from hf://alice/run" in text) == (not strategy.last_checkpoint), name
    assert "--ckpt_path hf://alice/run/checkpoint-{step}" in STRATEGIES["all_checkpoints"].card("alice/run")


@pytest.mark.parametrize(("strategy", "pushed"), [
    ("every_save", {"model.safetensors": 100}),
    ("end", {"model.safetensors": 100}),
    ("checkpoint", {"model.safetensors": 100, "last-checkpoint/ (weights + training state)": 300}),
    ("all_checkpoints", {"model.safetensors": 100, "last-checkpoint/ (weights + training state)": 300,
                         "checkpoint-{step}/ (weights + training state)": 300}),
])
def test_the_push_size_holds_what_the_strategy_pushes(strategy, pushed):
    assert STRATEGIES[strategy].push_bytes(100, training_state=200) == pushed


def test_the_resume_message_names_the_strategies_by_what_they_push():
    assert resumable_names() == (["checkpoint", "all_checkpoints"], ["every_save", "end"])


def test_a_name_taken_is_refused_and_an_unknown_one_lists_the_registered():
    with pytest.raises(ValueError, match="named 'end' is registered already"):
        strategies.register_strategy(strategies.Strategy("end", "", False, False, False, ""))
    with pytest.raises(Exception, match="hub.hub_strategy='every-save': no Hub strategy of that name is registered; "
                                        "the registered ones are every_save, checkpoint, all_checkpoints, end"):
        STRATEGIES["every-save"]
