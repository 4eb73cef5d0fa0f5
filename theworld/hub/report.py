"""The pictures and logs of a run's Hub repo, rendered from its :class:`~theworld.run_summary.RunSummary`:
the loss curve, the held-out gallery and TensorBoard event files. Each push writes them afresh, so a repo
holds one set (``samples/`` replaced in the same commit, never piling up).

Example:
    >>> files = report_files(module.run_summary(), push_logs=True)
    >>> sorted(files)
    ['data_yield.json', 'evaluation/results.json', 'loss_curve.png', 'runs/events.out.tfevents.theworld',
     'samples/00.png', ..., 'samples/captions.json']
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from theworld.captions import CaptionSample
from theworld.run_summary import RunSummary

LOSS_CURVE = "loss_curve.png"
SAMPLES_DIR = "samples"
RUNS_DIR = "runs"
DATA_YIELD_NAME = "data_yield.json"  # img2dataset-style success/failure counts and rates of the data read
EVENTS_NAME = "events.out.tfevents.theworld"  # TensorBoard (and the Hub's metrics tab) read any *tfevents* file
EVALUATION_NAME = "evaluation/results.json"  # the latest benchmark evaluation, every answer included
GALLERY_SIZE = 8  # images pushed per validation: a glance, not a dataset
GALLERY_PIXELS = 192  # longest side of a pushed sample image


def gallery(summary: RunSummary) -> list[tuple[str, CaptionSample]]:
    """(repo path, sample) of the pushed gallery: the first ``GALLERY_SIZE`` held-out samples with an image."""
    samples = [s for s in summary.gallery if s.image is not None][:GALLERY_SIZE]
    return [(f"{SAMPLES_DIR}/{i:02d}.png", sample) for i, sample in enumerate(samples)]


def report_files(summary: RunSummary, push_logs: bool = False) -> dict[str, bytes]:
    """Repo path -> bytes: the loss curve (once a loss is logged), the gallery with ``samples/captions.json``, and
    with ``push_logs`` the TensorBoard events under ``runs/``."""
    files: dict[str, bytes] = {DATA_YIELD_NAME: data_yield_json(summary)}
    if summary.train_losses or any(r.val_loss is not None for r in summary.history):
        files[LOSS_CURVE] = loss_curve_png(summary)
    captions = []
    for path, sample in gallery(summary):
        assert sample.image is not None  # gallery() keeps the samples with an image
        image = sample.image.convert("RGB")
        image.thumbnail((GALLERY_PIXELS, GALLERY_PIXELS))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files[path] = buffer.getvalue()
        captions.append(
            {"image": path, "key": sample.key, "generated": sample.generated, "reference": sample.reference}
        )
    if captions:
        files[f"{SAMPLES_DIR}/captions.json"] = (json.dumps(captions, indent=2) + "\n").encode()
    if summary.benchmark:
        files[EVALUATION_NAME] = (
            json.dumps({**summary.benchmark.result.to_dict(), "step": summary.benchmark.step}, indent=1) + "\n"
        ).encode()
    if push_logs:
        files[f"{RUNS_DIR}/{EVENTS_NAME}"] = tensorboard_events(summary)
    return files


def data_yield_json(summary: RunSummary) -> bytes:
    """``data_yield.json``: the run's img2dataset-style yield (:meth:`RunSummary.data_yield`)."""
    return (json.dumps(summary.data_yield(), indent=2) + "\n").encode()


def loss_curve_png(summary: RunSummary) -> bytes:
    """Train loss (at logging steps) and validation loss against the optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in the checkpoint writer thread
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    if summary.train_losses:
        steps, losses = zip(*summary.train_losses, strict=True)
        axes.plot(steps, losses, label="train/loss", linewidth=1)
    validations = [(r.step, r.val_loss) for r in summary.history if r.val_loss is not None]
    if validations:
        steps, losses = zip(*validations, strict=True)
        axes.plot(steps, losses, "o-", label="val/loss")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def tensorboard_events(summary: RunSummary) -> bytes:
    """One TensorBoard event file with every logged train loss and each validation's figures."""
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(logdir=folder, flush_secs=3600)
        for step, loss in summary.train_losses:
            writer.add_scalar("train/loss", loss, step)
        for record in summary.history:
            if record.val_loss is not None:
                writer.add_scalar("val/loss", record.val_loss, record.step)
            for name, value in record.captions.items():
                writer.add_scalar(f"val/caption_{name}", value, record.step)
        if summary.benchmark:
            for name, value in summary.benchmark.result.metrics().items():
                writer.add_scalar(name, value, summary.benchmark.step)
        writer.close()
        (events,) = Path(folder).glob("*tfevents*")
        return events.read_bytes()
