"""The private Lightning names TheWorld relies on (theworld/lightning_private.py) still exist, and no other file
of theworld uses one.

Each entry of PRIVATE_ACCESSES is its own test, named ``Owner.name``: a red one names what a new Lightning renamed or
removed. An override of a renamed method would never be called again, silently; these tests catch that too.
"""

import ast
import importlib
import inspect
import re
from pathlib import Path
from unittest import mock

import lightning as L
import pytest
import torch
from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from theworld import lightning_private
from theworld.lightning_private import OVERRIDES, PRIVATE_ACCESSES

SOURCE = Path(lightning_private.__file__).resolve().parent  # theworld/
MODULE = Path(lightning_private.__file__).resolve()

# Private names of other libraries that theworld uses (not Lightning's: out of this test's scope), by name.
NOT_LIGHTNING = {
    "_compiled_call_impl": "torch.nn.Module (theworld/lit/module.py)",
    "_parameters": "torch.nn.Module (theworld/estimate.py)",
    "_buffers": "torch.nn.Module (theworld/estimate.py)",
    "_python_dispatch": "torch.utils (theworld/estimate.py)",
    "_pytree": "torch.utils (theworld/estimate.py)",
    "_subclasses": "torch (theworld/estimate.py)",
    "_scaled_dot_product_flash_attention_for_cpu": "torch.ops.aten (theworld/estimate.py)",
    "_scaled_dot_product_flash_attention_for_cpu_backward": "torch.ops.aten (theworld/estimate.py)",
    "_from_config": "transformers PreTrainedModel (theworld/estimate.py)",
    "_actions": "argparse.ArgumentParser (theworld/lit/cli.py)",
    "_exit": "os (theworld/data/workers.py)",
    "_GLOBAL_CLIENT_FACTORY": "huggingface_hub.utils._http (theworld/hub/session.py)",
    "_current_frames": "sys (theworld/stops.py)",
}


def _test_id(access) -> str:
    return f"{access.owner.rsplit('.', 1)[-1]}.{access.name}"


def _resolve(owner: str):
    module, _, name = owner.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _tiny_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)


class _Positioned(DataLoader):
    """A loader with a position, as TheWorld's StatefulDataLoader has: Lightning saves it in the checkpoint."""

    def state_dict(self):
        return {"position": 3}

    def load_state_dict(self, state):
        pass


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch).sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return _Positioned(torch.zeros(4, 2), batch_size=2)

    def val_dataloader(self):
        return DataLoader(torch.zeros(2, 2), batch_size=2)


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    """Real Lightning objects, for the names Lightning sets on instances (in __init__) rather than on classes."""
    trainer = _tiny_trainer(enable_checkpointing=False)
    return {
        "lightning.pytorch.Trainer": trainer,
        "lightning.pytorch.loops._TrainingEpochLoop": trainer.fit_loop.epoch_loop,
        "lightning.pytorch.callbacks.ModelCheckpoint": ModelCheckpoint(dirpath=tmp_path_factory.mktemp("ckpt")),
        "lightning.fabric.strategies.launchers.subprocess_script._ChildProcessObserver":
            _ChildProcessObserver(main_pid=0, child_processes=[]),  # not started
    }


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """The checkpoint dict of a two-step fit on CPU, as Lightning writes it (the loops' state included)."""
    folder = tmp_path_factory.mktemp("fit")
    trainer = _tiny_trainer(max_steps=2, default_root_dir=folder, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(_Tiny())
    trainer.save_checkpoint(folder / "tiny.ckpt")
    return torch.load(folder / "tiny.ckpt", weights_only=False)


@pytest.mark.parametrize("access", PRIVATE_ACCESSES, ids=_test_id)
def test_private_lightning_name_still_exists(access, instances, saved_checkpoint):
    fix = (f"Lightning {L.__version__} has no {access.owner}.{access.name}, which theworld uses ({access.how}: "
           f"{access.why}). Find what replaced it in Lightning's source, update theworld/lightning_private.py "
           f"(and the override, if it is one) and this entry, then raise the bound on lightning in pyproject.toml.")
    if access.how == "checkpoint key":
        found = {"epoch_loop.val_loop.batch_progress": lightning_private.validation_progress,
                 "state_dict.combined_loader": lightning_private.loader_state}[access.name](saved_checkpoint)
        assert found is not None, fix
        return
    owner = _resolve(access.owner)
    instance = instances.get(access.owner)
    assert hasattr(owner, access.name) or (instance is not None and hasattr(instance, access.name)), fix
    if "override" in access.how:
        base = getattr(owner, access.name)
        assert callable(base), fix
        ours = [getattr(cls, access.name) for cls in _overriding_classes(owner, access.name)]
        assert ours, f"{access.owner}.{access.name} is declared an override but no theworld class overrides it"
        for method in ours:
            assert _parameters(method) == _parameters(base), (
                f"{access.owner}.{access.name} now takes {_parameters(base)}, theworld's override "
                f"{method.__qualname__} {_parameters(method)}: Lightning would call it wrongly. {fix}")


def _parameters(method) -> list[str]:
    return [name for name in inspect.signature(method).parameters if name != "self"]


def _overriding_classes(base: type, name: str) -> list[type]:
    found = []
    for file, method in OVERRIDES:
        if method != name:
            continue
        module = importlib.import_module("theworld." + file.removesuffix(".py").replace("/", "."))
        found += [cls for cls in vars(module).values()
                  if isinstance(cls, type) and issubclass(cls, base) and name in vars(cls)]
    return found


def test_every_override_is_declared():
    declared = {access.name for access in PRIVATE_ACCESSES if "override" in access.how}
    assert {name for _, name in OVERRIDES} == declared


def test_accessors_work_on_a_real_trainer(instances):
    trainer, checkpoint = instances["lightning.pytorch.Trainer"], instances["lightning.pytorch.callbacks.ModelCheckpoint"]
    assert lightning_private.cluster_environment(trainer) is not None
    assert isinstance(lightning_private.should_update_logs(trainer), bool)
    assert lightning_private.last_global_step_saved(checkpoint) == 0
    loop = trainer.fit_loop.epoch_loop
    before = loop._batches_that_stepped
    lightning_private.take_back_logged_step(trainer)
    assert loop._batches_that_stepped == before - 1
    loop._batches_that_stepped = before


def test_the_checkpoint_keys_are_where_lightning_writes_them(saved_checkpoint):
    assert lightning_private.loader_state(saved_checkpoint) == [{"position": 3}]
    progress = lightning_private.validation_progress(saved_checkpoint)
    assert set(progress["total"]) >= {"ready", "started", "completed"}
    lightning_private.mark_validation_started(progress)
    assert progress["total"]["started"] == progress["total"]["completed"] + 1


# ------------------------------------------------------------------ the module stays the one place
def _python_files():
    return sorted(p for p in SOURCE.rglob("*.py") if p.resolve() != MODULE)


def _own_private_names() -> set[str]:
    """The private names theworld defines itself (methods, functions, assigned attributes, module globals)."""
    names = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Attribute):
                            names.add(sub.attr)
                        elif isinstance(sub, ast.Name):
                            names.add(sub.id)
    return {name for name in names if name.startswith("_")}


def _lightning_bases(module_name: str, class_name: str) -> list[type]:
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not isinstance(cls, type):
        return []
    return [base for base in cls.__mro__[1:] if base.__module__.startswith("lightning")]


def _defined_by(bases: list[type], name: str) -> bool:
    pattern = re.compile(rf"(self\.|def |^\s*){re.escape(name)}\b", re.M)
    for base in bases:
        try:
            if pattern.search(inspect.getsource(base)):
                return True
        except (OSError, TypeError):
            continue
    return False


def _private_uses(path: Path):
    """(line, name, how) for each private name ``path`` uses: ``x._name``, ``getattr(x, "_name")``, ``def _name``
    inside a class, each with the class it is in and whether it is on self/super()."""
    tree = ast.parse(path.read_text())
    uses = []

    def visit(node, cls, method):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, child.name, None)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if cls is not None and child.name.startswith("_") and not child.name.startswith("__"):
                    uses.append((child.lineno, child.name, "def", cls, child.name))
                visit(child, cls, child.name)
                continue
            if isinstance(child, ast.Attribute) and child.attr.startswith("_") and not child.attr.startswith("__"):
                value = child.value
                on = ("self" if isinstance(value, ast.Name) and value.id in ("self", "cls")
                      else "super" if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super"
                      else "other")
                uses.append((child.lineno, child.attr, on, cls, method))
            if (isinstance(child, ast.Call) and getattr(child.func, "id", None) in ("getattr", "hasattr", "setattr")
                    and len(child.args) >= 2 and isinstance(child.args[1], ast.Constant)
                    and isinstance(child.args[1].value, str) and child.args[1].value.startswith("_")):
                uses.append((child.lineno, child.args[1].value, "other", cls, method))
            visit(child, cls, method)

    visit(tree, None, None)
    return uses


def test_no_private_lightning_name_outside_the_module():
    """Only theworld/lightning_private.py (and the declared overrides) may name a private Lightning attribute:
    a name from PRIVATE_ACCESSES, a Lightning base class's private name used through self, or any private name on
    another object that is neither theworld's own nor listed in NOT_LIGHTNING."""
    declared = {access.name for access in PRIVATE_ACCESSES}
    key_strings = {"loops", "combined_loader", "epoch_loop.val_loop.batch_progress"}
    own = _own_private_names() - declared
    found = []
    for path in _python_files():
        relative = path.relative_to(SOURCE).as_posix()
        module_name = "theworld." + relative.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        overrides = {name for file, name in OVERRIDES if file == relative}
        for line, name, on, cls, method in _private_uses(path):
            where = f"theworld/{relative}:{line}: {name}"
            # The override itself, and its call of Lightning's implementation (super()._name inside it).
            if name in overrides and (on == "def" or (on == "super" and method == name)):
                continue
            if name in declared:
                found.append(f"{where} (private Lightning: call it through theworld.lightning_private)")
            elif on in ("self", "super", "def") and cls is not None and _defined_by(_lightning_bases(module_name, cls),
                                                                                     name):
                found.append(f"{where} (defined by {cls}'s Lightning base class: an override or use of a private "
                             f"Lightning name; declare it in lightning_private.PRIVATE_ACCESSES)")
            elif on == "other" and name not in own and name not in NOT_LIGHTNING:
                found.append(f"{where} (a private name theworld does not define: if it is Lightning's, move it to "
                             f"lightning_private.py; if another library's, add it to NOT_LIGHTNING here)")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in key_strings:
                found.append(f"theworld/{relative}:{node.lineno}: {node.value!r} (Lightning's checkpoint layout of "
                             f"its loops: read it through theworld.lightning_private)")
    assert not found, "Private Lightning names outside theworld/lightning_private.py:\n" + "\n".join(found)


def test_a_stopping_process_is_no_longer_killed_by_the_launchers_watch():
    """Lightning's launcher SIGKILLs the main process once a child rank exits non-zero, as every rank does on a stop
    (143): stop_watching_child_ranks() ends that watch. The "main process" here is a stand-in `sleep`."""
    import subprocess
    import time

    main = subprocess.Popen(["sleep", "30"])
    child = subprocess.Popen(["sh", "-c", "sleep 0.5; exit 143"])
    watch = _ChildProcessObserver(main_pid=main.pid, child_processes=[child], sleep_period=0.2)
    watch.start()
    try:
        lightning_private.stop_watching_child_ranks()
        child.wait()
        watch.join(timeout=10)
        assert not watch.is_alive()
        with pytest.raises(subprocess.TimeoutExpired):  # still running: the watch did not kill it
            main.wait(timeout=2)
    finally:
        main.kill()
        main.wait()


def test_a_sigterm_to_rank_0_alone_is_forwarded_to_the_child_ranks():
    """``kill <rank 0's pid>`` stops the whole job: the child ranks get the SIGTERM too, as Lightning's own handler
    (which theworld's replace) forwarded it. Without it they would wait in a collective for a rank 0 gone."""
    import signal
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    watch = _ChildProcessObserver(main_pid=0, child_processes=[child], sleep_period=60)  # not started
    with mock.patch("threading.enumerate", return_value=[watch]):
        lightning_private.stop_watching_child_ranks(forward=signal.SIGTERM)
    assert child.wait(timeout=10) == -signal.SIGTERM
    assert watch._child_processes == []
