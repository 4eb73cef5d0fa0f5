"""Training-step time while a ~100 MB checkpoint uploads to the Hub, against steps with no upload.

A real ``Trainer`` runs ``TrainableCheckpoint`` + ``HubSyncCallback`` (real staging, uploader thread
and huggingface_hub client) on a stand-in module: one ~100 MB trainable tensor, so the checkpoint
is ~100 MB, and a training step that is a fixed matmul loop (``--width``, ``--depth``) standing in
for TheWorld's forward/backward. The big tensor gets no gradient and the loop's weight trains at
lr 0, so every step costs the same.

The local Hub (tests/hub_server.py) runs in a child process, LFS uploads throttled to ``--mbps``,
so each upload spans many steps. ``--cycles`` times: ``--idle-steps`` quiet steps, then one save
(bytes changed first, so it really uploads) and the steps while it uploads. The step runs on
``--threads`` torch threads (default 1, leaving the other core(s) to the uploader, the checkpoint
writer and the Hub server process, as on a GPU box). Each step is timed from ``on_train_batch_start``
to ``on_train_batch_end`` and labelled:

- ``idle``: no push queued or in flight (steps before the save and after the upload);
- ``uploading``: a push queued or in flight.

Steps between the save and the push being queued (the checkpoint write itself) count in neither.
Prints JSON lines; the last is ``{"step_s_uploading", "step_s_idle", "ratio"}`` (goal: ratio <= 1.05).

    python bench/upload_overlap.py [--mb 100] [--mbps 8]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # the local Hub speaks the LFS protocol
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from theworld.callbacks import HubSyncCallback, TrainableCheckpoint  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.hub_standin import StandInSummary  # noqa: E402

from theworld.config import TheWorldConfig  # noqa: E402

TOKEN = "hf_bench_token"
REPO_ID = "bench/upload-overlap"


# The local Hub in its own process, so its request handling does not share this process's GIL.
SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from hub_server import Faults, HubServer
hub = HubServer({{{token!r}: {{"user": "bench", "role": "write"}}}}).start()
hub.faults = Faults(bandwidth_bps={bps}, paths=r"/lfs-upload/")
print(hub.url, flush=True)
time.sleep(10**6)
"""


class BenchModule(StandInSummary, L.LightningModule):
    def __init__(self, mb: int, width: int, depth: int):
        super().__init__()
        self.model = nn.ParameterDict({
            "checkpoint_bulk": nn.Parameter(torch.randn(mb * 2**20 // 4)),  # trainable, so it is saved
            "w": nn.Parameter(torch.randn(width, width) / width**0.5),
        })
        self.world_config = TheWorldConfig()
        self.depth = depth

    def trainable_state_dict(self):
        return {k: v.detach() for k, v in self.model.items()}

    def training_step(self, batch, batch_idx):
        y = batch
        for _ in range(self.depth):
            y = torch.tanh(y @ self.model["w"])
        return y.pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD([self.model["w"]], lr=0.0)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["state_dict"] = {f"model.{k}": v for k, v in self.trainable_state_dict().items()}
        checkpoint["theworld_config"] = self.world_config.to_dict()


class SameBatch(torch.utils.data.Dataset):
    """An endless stream of one batch: the loader costs nothing, the step is all compute."""

    def __init__(self, batch: torch.Tensor):
        self.batch = batch

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.batch


class StepClock(L.Callback):
    """Times every step; ``cycles`` times: ``idle_steps`` quiet steps, then one save and its upload.

    Alternating the phases spreads both over the whole run, so drifts in machine load cancel out.
    """

    def __init__(self, sync: HubSyncCallback, cycles: int, idle_steps: int, warmup: int):
        self.sync, self.cycles_left, self.idle_steps, self.warmup = sync, cycles, idle_steps, warmup
        self.idle_left = warmup + idle_steps
        self.phase = "idle"
        self.steps: list[dict] = []

    def _finished(self) -> float:
        m = self.sync.metrics
        return m["hub/pushes_done"] + m["hub/pushes_failed"] + m["hub/pushes_superseded"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        seconds = time.perf_counter() - self.start
        pending = self.sync.metrics["hub/pushes_pending"]
        if self.phase == "saving" and (pending or self._finished() > self.finished_at_save):
            self.phase = "uploading"
        elif self.phase == "uploading" and not pending:
            self.phase, self.idle_left = "idle", self.idle_steps
        if trainer.global_step > self.warmup and self.phase != "saving":
            self.steps.append({"step": trainer.global_step, "seconds": seconds, "phase": self.phase})
        if self.phase != "idle":
            return
        self.idle_left -= 1
        if self.idle_left > 0:
            return
        if self.cycles_left == 0:
            trainer.should_stop = True
            return
        self.cycles_left -= 1
        with torch.no_grad():  # new bytes, so the Hub cannot skip the upload as unchanged
            pl_module.model["checkpoint_bulk"][0] += 1
        self.phase, self.finished_at_save = "saving", self._finished()
        trainer.save_checkpoint(str(Path(trainer.default_root_dir) / f"checkpoint-{trainer.global_step}"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100, help="checkpoint size")
    parser.add_argument("--mbps", type=float, default=8.0, help="upload bandwidth, MB/s")
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=3, help="saves, each followed by its upload")
    parser.add_argument("--idle-steps", type=int, default=100, help="quiet steps before each save and at the end")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the step (1: a core for the step, the rest for everything else)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tests = str(Path(__file__).resolve().parents[1] / "tests")
    code = SERVER.format(tests=tests, token=TOKEN, bps=args.mbps * 1e6)
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    endpoint = server.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sync = HubSyncCallback(hub_model_id=REPO_ID, hf_token=TOKEN, endpoint=endpoint, hub_strategy="every_save")
            clock = StepClock(sync, args.cycles, args.idle_steps, args.warmup)
            trainer = L.Trainer(
                max_steps=100_000, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=tmp,
                callbacks=[TrainableCheckpoint(dirpath=tmp, every_n_train_steps=None, save_last=False), sync, clock],
            )
            data = torch.utils.data.DataLoader(SameBatch(torch.randn(args.width, args.width)), batch_size=None)
            fit_start = time.perf_counter()
            trainer.fit(BenchModule(args.mb, args.width, args.depth), train_dataloaders=data)
            fit_seconds = time.perf_counter() - fit_start
    finally:
        server.terminate()

    by_phase = {p: [s["seconds"] for s in clock.steps if s["phase"] == p] for p in ("idle", "uploading")}
    for phase, times in by_phase.items():
        print(json.dumps({"phase": phase, "steps": len(times), "median_s": round(statistics.median(times), 5),
                          "p90_s": round(sorted(times)[int(0.9 * len(times))], 5), "max_s": round(max(times), 5)}))
    print(json.dumps({"checkpoint_mb": args.mb, "upload_mbps": args.mbps, "torch_threads": torch.get_num_threads(),
                      "upload_steps": len(by_phase["uploading"]), "fit_s": round(fit_seconds, 2),
                      **{k: round(v, 2) for k, v in sync.metrics.items()}}))
    uploading, idle = statistics.median(by_phase["uploading"]), statistics.median(by_phase["idle"])
    print(json.dumps({"step_s_uploading": round(uploading, 5), "step_s_idle": round(idle, 5),
                      "ratio": round(uploading / idle, 3)}))


if __name__ == "__main__":
    main()
