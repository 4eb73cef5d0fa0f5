"""Provenance at DataComp-large scale: 1.28B samples, a save every 1000 steps of global batch 4096 (313 saves).

Drives the real saving code, no training: ``TrainedSamples.add`` once a step with the step's keys (random
32-character hex uids, like DataComp's), ``TrainedSamples.save`` at each checkpoint, ``write_provenance`` into the
checkpoint folder as the checkpoint writer does (``atomic_directory``, the 3 newest folders kept), and for the push
``repo_deltas`` (what the Hub sync stages) less the deltas an earlier push sent (what ``_commit`` leaves out).

Generating and writing 1.28B keys takes longer than a bench should (about 5 s a save here, 25 min in all), so the
run has two phases, both printed:

* ``whole_run``: all 313 saves at the real steps and save interval, with a global batch of 128 instead of 4096 (40M
  keys): shows what grows with the run (the history file, the manifest, the RAM) and what does not (bytes a save).
* ``full_interval``: resumed from the last checkpoint of that run (the real manifest of 310 saves, read the way a
  resume reads it), the last 3 saves at the real global batch of 4096 (4.1M keys a save): peak RAM and bytes a save
  at full scale. ``extrapolated`` multiplies them out to the whole run.

* ``multi_rank``: 2 ranks (gloo processes), each adding its half of the real global batch, for ``--rank_saves``
  full intervals: ``TrainedSamples.save`` gathers the ranks' new rows on rank 0, which writes the delta and stages
  the push with the Hub sync's own ``_stage``, hardlinks failing (every staged file a copy; the deltas an earlier
  commit sent left out, as ``_commit`` records them). Peak RSS per rank, bytes staged a push.

Each line is JSON. Usage::

    python bench/provenance_scale.py            # about 3-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from theworld.callbacks import HubSyncCallback
from theworld.checkpoint import atomic_directory
from theworld.layout import PROVENANCE_DIR, PROVENANCE_NAME
from theworld.provenance import TrainedSamples, repo_deltas, write_provenance

SAMPLES = 1_280_000_000  # DataComp large
GLOBAL_BATCH = 4096
SAVE_EVERY = 1000  # steps
KEEP = 3  # save_top_k


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def uids(n: int) -> list[str]:
    hexed = os.urandom(16 * n).hex()
    return [hexed[i:i + 32] for i in range(0, 32 * n, 32)]


def run_saves(folder: Path, trained: TrainedSamples, first_step: int, last_step: int, batch: int, pushed: set[str],
              phase: str) -> list[dict]:
    """Trains steps ``first_step``..``last_step - 1`` (keys only) and saves every SAVE_EVERY steps and at the end."""
    records = []
    step = first_step
    while step < last_step:
        end = min(last_step, (step // SAVE_EVERY + 1) * SAVE_EVERY)
        start = time.perf_counter()
        for s in range(step, end):
            trained.add(s, uids(batch))
        save = trained.save(rank=0, world_size=1, step=end)
        target = folder / f"checkpoint-{end}"
        with atomic_directory(target) as tmp:
            write_provenance(save, tmp)
        written = os.path.getsize(target / PROVENANCE_NAME) + (
            os.path.getsize(folder / "provenance" / save.history.deltas[-1].name) if save.rows is not None else 0)
        staged = repo_deltas([target / PROVENANCE_NAME])
        new = {rel: path for rel, path in staged.items() if rel not in pushed}
        pushed.update(new)
        del save
        for old in sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-KEEP]:
            shutil.rmtree(old)
        records.append({"phase": phase, "save": len(trained.history.deltas), "step": end, "rows": batch * (end - step),
                        "bytes_written": written,
                        "bytes_pushed": sum(p.stat().st_size for p in new.values()) + os.path.getsize(
                            target / PROVENANCE_NAME),
                        "manifest_bytes": os.path.getsize(target / PROVENANCE_NAME),
                        "history_rows": trained.history.rows, "peak_rss_mib": round(peak_rss_mib(), 1),
                        "seconds": round(time.perf_counter() - start, 3)})
        step = end
    return records


def rank_saves(rank: int, world_size: int, folder: Path, saves: int, port: int, results) -> None:
    """One rank of the multi_rank phase (a spawned process); its records go to ``results``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    trained, baseline = TrainedSamples(), peak_rss_mib()
    sync = HubSyncCallback(hub_model_id="bench/provenance") if rank == 0 else None

    def no_hardlinks(source, target):
        raise OSError(95, "Operation not supported")

    os.link = no_hardlinks  # this process only: the staging copies, as on a filesystem without hardlinks
    for save_index in range(saves):
        first, end = save_index * SAVE_EVERY, (save_index + 1) * SAVE_EVERY
        start = time.perf_counter()
        for step in range(first, end):
            trained.add(step, uids(GLOBAL_BATCH // world_size))
        save = trained.save(rank, world_size, end)
        record = {"phase": "multi_rank", "rank": rank, "save": save_index + 1, "step": end}
        if sync is not None:
            assert save is not None
            target = folder / f"checkpoint-{end}"
            with atomic_directory(target) as tmp:
                write_provenance(save, tmp)
            del save
            files = {f"{target.name}/{PROVENANCE_NAME}": target / PROVENANCE_NAME,
                     **repo_deltas([target / PROVENANCE_NAME])}
            staged = sync._stage(folder, files, {})
            record["bytes_staged"] = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
            record["deltas_staged"] = len(list(staged.glob(f"{PROVENANCE_DIR}/*")))
            # What a landed commit records: those deltas are on the Hub now.
            sync._deltas_on_hub = frozenset(rel for rel in files if rel.startswith(f"{PROVENANCE_DIR}/"))
            shutil.rmtree(staged)
        record.update(rows_per_rank=GLOBAL_BATCH // world_size * SAVE_EVERY, baseline_rss_mib=round(baseline, 1),
                      peak_rss_mib=round(peak_rss_mib(), 1), seconds=round(time.perf_counter() - start, 3))
        results.put(record)
    torch.distributed.destroy_process_group()


def multi_rank(folder: Path, saves: int, world_size: int = 2) -> list[dict]:
    """The multi_rank phase: ``world_size`` processes, ``saves`` full intervals; their records, by rank and save."""
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    torch.multiprocessing.spawn(rank_saves, args=(world_size, folder, saves, port, results), nprocs=world_size)
    records = []
    while not results.empty():
        records.append(results.get())
    return sorted(records, key=lambda r: (r["save"], r["rank"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scaled_batch", type=int, default=128, help="global batch of the whole_run phase")
    parser.add_argument("--full_saves", type=int, default=3, help="saves at the real batch in the full_interval phase")
    parser.add_argument("--rank_saves", type=int, default=3, help="saves of the multi_rank phase (2 ranks)")
    args = parser.parse_args()
    steps = -(-SAMPLES // GLOBAL_BATCH)  # 312,500
    saves = -(-steps // SAVE_EVERY)
    print(json.dumps({"samples": SAMPLES, "global_batch": GLOBAL_BATCH, "save_every_steps": SAVE_EVERY,
                      "steps": steps, "saves": saves, "baseline_peak_rss_mib": round(peak_rss_mib(), 1)}))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoints"
        pushed: set[str] = set()
        full_from = (saves - args.full_saves) * SAVE_EVERY
        whole = run_saves(folder, TrainedSamples(), 0, full_from, args.scaled_batch, pushed, "whole_run")
        for record in whole[:2] + whole[-2:]:
            print(json.dumps(record))
        print(json.dumps({"phase": "whole_run", "saves": len(whole), "rows": whole[-1]["history_rows"],
                          "max_bytes_written": max(r["bytes_written"] for r in whole),
                          "max_bytes_pushed": max(r["bytes_pushed"] for r in whole),
                          "peak_rss_mib": round(peak_rss_mib(), 1),
                          "history_bytes_on_disk": sum(p.stat().st_size for p in (folder / "provenance").iterdir())}))
        resumed = TrainedSamples.resume(folder / f"checkpoint-{full_from}", full_from)
        full = run_saves(folder, resumed, full_from, steps, GLOBAL_BATCH, pushed, "full_interval")
        for record in full:
            print(json.dumps(record))
        per_save = [r for r in full if r["step"] % SAVE_EVERY == 0] or full
        bytes_a_save = max(r["bytes_written"] for r in per_save)
        print(json.dumps({"phase": "extrapolated", "saves": saves, "rows": SAMPLES,
                          "bytes_written_per_save": bytes_a_save,
                          "bytes_pushed_per_save": max(r["bytes_pushed"] for r in per_save),
                          "history_bytes_on_disk": bytes_a_save * saves,
                          "bytes_per_sample_on_disk": round(bytes_a_save / (GLOBAL_BATCH * SAVE_EVERY), 2),
                          "peak_rss_mib": round(peak_rss_mib(), 1)}))
    with tempfile.TemporaryDirectory() as tmp:
        for record in multi_rank(Path(tmp) / "checkpoints", args.rank_saves):
            print(json.dumps(record))


if __name__ == "__main__":
    main()
