"""DataComp's real downloader (img2dataset 1.40.0, DataComp's pin, with download_upstream.py's arguments) on planted
DataComp-schema metadata served over HTTP; `theworld fit` trains on its shards; our face blur against its own.

img2dataset runs in its own venv (its pins clash with ours): tests/support/img2dataset_venv.py.
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support import img2dataset_venv
from support.blur_figures import blur_figures
from support.cli_runs import fit, provenance

from theworld.data.decode import blur_faces, datacomp_resize
from theworld.data.webdataset import WebDatasetSource
from theworld.provenance import key_kinds
from theworld.testing.http import serve_directory
from theworld.testing.synthetic import encode_image, good_row, uid_of, write_rows

SUPPORT = Path(__file__).parent / "support"
# Face images: (size, boxes) - a large face beside a small one, a single face in an image img2dataset keeps at its
# size, and two faces of one size.
FACES = [((800, 600), [[0.1, 0.1, 0.45, 0.75], [0.7, 0.2, 0.74, 0.26]]),
         ((300, 240), [[0.3, 0.2, 0.6, 0.7]]),
         ((640, 640), [[0.05, 0.05, 0.35, 0.35], [0.6, 0.55, 0.9, 0.9]])]


@pytest.fixture(scope="session")
def img2dataset_python() -> Path:
    """The python of a venv holding img2dataset 1.40.0 (support/img2dataset_venv.py)."""
    return img2dataset_venv.img2dataset_python()


def _texture(size: tuple[int, int], seed: int) -> Image.Image:
    """Face-scale detail: coarse noise smoothly enlarged, with fine noise on top."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)).resize(
        size, Image.Resampling.BICUBIC)
    fine = rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(coarse) + fine, 0, 255).astype(np.uint8))


def _plant(root: Path, url: str) -> tuple[Path, dict]:
    """DataComp-schema metadata: good rows of several modes and sizes, face rows, and the failures of the issue.

    Returns the parquet and, by uid, what must become of each row: ``"trained"`` or the reason it is skipped
    (img2dataset's status, or our loader's reason for a sample img2dataset kept).
    """
    images = root / "images"
    images.mkdir(exist_ok=True)
    rows, fate = [], {}

    def add(index: int, data: bytes | None, ext: str = "jpg", **fields) -> None:
        row = good_row(0, index, 64, url, images)  # a good image, replaced below when data is given
        if data is not None:
            (images / f"{row['uid']}.jpg").unlink()
            (images / f"{row['uid']}.{ext}").write_bytes(data)
            row["url"] = f"{url}/{row['uid']}.{ext}"
        rows.append({**row, **fields})

    for i in range(12):
        add(i, None)
        fate[uid_of(i)] = "trained"
    base = _texture((96, 80), 1)
    modes = [(base.convert("L"), "JPEG", "jpg"), (base.convert("RGBA"), "PNG", "png"),
             (base.convert("P"), "PNG", "png"), (_texture((700, 500), 2), "JPEG", "jpg")]
    for i, (image, fmt, ext) in enumerate(modes):
        add(20 + i, encode_image(image, fmt), ext)
        fate[uid_of(20 + i)] = "trained"
    for i, (size, boxes) in enumerate(FACES):
        add(40 + i, encode_image(_texture(size, 10 + i)), face_bboxes=boxes)
        fate[uid_of(40 + i)] = "trained"
    add(60, None, url=f"{url}/missing.jpg")
    fate[uid_of(60)] = "failed_to_download"
    add(61, b"this is not an image" * 10)
    fate[uid_of(61)] = "failed_to_resize"
    add(62, None, sha256="0" * 64)  # DataComp never checks it, nor do we by default
    fate[uid_of(62)] = "trained"
    add(63, None, text="")
    add(64, None, text=None)  # img2dataset writes both as an empty .txt
    fate[uid_of(63)] = fate[uid_of(64)] = "empty_caption"
    add(65, encode_image(_texture((8, 8), 3)))  # img2dataset keeps any size; our loader's minimum is 16 px here
    fate[uid_of(65)] = "too_small"
    metadata = root / "metadata" / "part-00000.parquet"
    metadata.parent.mkdir()
    write_rows(rows, metadata)
    return metadata, fate


@pytest.fixture(scope="module")
def downloaded(img2dataset_python, tmp_path_factory) -> tuple[Path, Path, dict]:
    """img2dataset 1.40.0's downloads of the planted metadata: (metadata, output folder, fate by uid)."""
    root = tmp_path_factory.mktemp("datacomp")
    url, stop = serve_directory(root / "images")
    try:
        metadata, fate = _plant(root, url)
        out = root / "out"
        run = subprocess.run([img2dataset_python, SUPPORT / "img2dataset_run.py", metadata.parent, out],
                             capture_output=True, text=True, timeout=300)
    finally:
        stop()
    assert run.returncode == 0, run.stderr[-4000:]
    return metadata, out, fate


def _uids(shards: Path) -> dict[str, dict]:
    """img2dataset's own record of each row (its per-shard parquet): status by uid."""
    return {row["uid"]: row for path in shards.glob("*.parquet") for row in pq.read_table(path).to_pylist()}


def test_datacomp_shards_train_with_their_uids_and_the_counts_of_its_stats(downloaded, demo_dir, tmp_path):
    metadata, out, fate = downloaded
    shards = out / "datacomp"
    ((stats_file,),) = [list(shards.glob("*_stats.json"))]
    stats = json.loads(stats_file.read_text())
    record = _uids(shards)
    assert {uid: row["status"] for uid, row in record.items() if row["status"] != "success"} == {
        uid: reason for uid, reason in fate.items() if reason.startswith("failed")}
    written = sorted(uid for uid, row in record.items() if row["status"] == "success")
    assert stats["count"] == len(fate) and stats["successes"] == len(written)

    run = tmp_path / "run"
    result = fit(demo_dir, "--trainer.default_root_dir", run, "--trainer.logger.init_args.save_dir", run,
                 "--trainer.max_steps", "-1", "--trainer.max_epochs", "1", "--checkpoint.every_n_train_steps", "0",
                 "--trainer.limit_val_batches", "0", "--data.val_data", "null", "--data.batch_size", "4",
                 "--data.train_data", shards, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    # Every sample img2dataset wrote was read: the yield's records are its successes, each trained or skipped.
    (summary,) = run.glob("logs/version_*/data_yield.json")
    figures = json.loads(summary.read_text())
    ours = {reason: sum(1 for f in fate.values() if f == reason) for reason in ("empty_caption", "too_small")}
    assert figures["records"] == stats["successes"] and figures["skipped"] == ours
    assert figures["trained"] == stats["successes"] - sum(ours.values())
    # Provenance: DataComp's uids, as the metadata has them.
    final = run / "checkpoints/final"
    trained = [key for _, _, key in provenance(final)]
    assert sorted(trained) == sorted(uid for uid, f in fate.items() if f == "trained")
    assert key_kinds(final) == {"uid"}


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_our_face_blur_covers_datacomps_and_leaves_no_more_detail(downloaded):
    metadata, out, fate = downloaded
    boxes = {row["uid"]: row["face_bboxes"] for row in pq.read_table(metadata).to_pylist() if row["face_bboxes"]}
    assert len(boxes) == len(FACES)
    # On img2dataset's own resize, losslessly: our blur_faces beside its blurrer. datacomp_resize gives the same
    # pixels as that resize (two of the images are shrunk, one is kept).
    for uid, faces in boxes.items():
        resized = Image.open(out / "reference" / f"{uid}-resized.png").convert("RGB")
        original = Image.open(metadata.parents[1] / "images" / f"{uid}.jpg").convert("RGB")
        assert np.array_equal(np.asarray(datacomp_resize(original)), np.asarray(resized))
        theirs = _rgb(out / "reference" / f"{uid}-blurred.png")
        figures = blur_figures(np.asarray(resized), theirs, np.asarray(blur_faces(resized, faces)), faces)
        print(json.dumps({"uid": uid, "size": resized.size, **figures}))
        assert figures["covered"] >= 0.99, figures
        for mine, datacomp in zip(figures["contrast_left"]["ours"], figures["contrast_left"]["theirs"]):
            assert mine <= datacomp + 0.01, figures
    # Through the loader: shards made without img2dataset's blur, blurred by ours from each .json's face_bboxes,
    # keep no more detail in any box than DataComp's shards.
    unblurred = {item["key"]: np.asarray(item["image"])
                 for item in WebDatasetSource(str(out / "unblurred"), blur_faces=False, min_image_size=0)}
    ours = {item["key"]: np.asarray(item["image"])
            for item in WebDatasetSource(str(out / "unblurred"), blur_faces=True, min_image_size=0)}
    datacomp = {item["key"]: np.asarray(item["image"])
                for item in WebDatasetSource(str(out / "datacomp"), blur_faces=False, min_image_size=0)}
    for uid, faces in boxes.items():
        figures = blur_figures(unblurred[uid], datacomp[uid], ours[uid], faces)
        print(json.dumps({"uid": uid, "through": "loader", **figures}))
        for mine, theirs in zip(figures["contrast_left"]["ours"], figures["contrast_left"]["theirs"]):
            assert mine <= theirs + 0.01, figures
    assert all(np.array_equal(ours[uid], unblurred[uid]) for uid in ours if uid not in boxes), "no face: untouched"
