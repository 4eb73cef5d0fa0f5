"""Runs img2dataset 1.40.0 as DataComp's download_upstream.py does; run by that venv's python, not ours.

``python img2dataset_run.py METADATA_PARQUET OUT_DIR`` writes:

* ``OUT_DIR/datacomp``: the download with DataComp's exact arguments (faces blurred by img2dataset);
* ``OUT_DIR/unblurred``: the same without ``bbox_col`` (``face_bboxes`` kept in each ``.json``), as a user
  who skips img2dataset's blur (or uses a version that blurs weaker) makes;
* ``OUT_DIR/reference/<uid>-{resized,blurred}.png``: for each row with face boxes, img2dataset's own resizer
  without and with its blurrer on the row's image file (read from ``images/`` beside the parquet), losslessly.
"""

import io
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
from img2dataset import download
from img2dataset.blurrer import BoundingBoxBlurrer
from img2dataset.resizer import Resizer

# DataComp's download_upstream.py; the rest as img2dataset's defaults (JPEG quality 95, sha256 computed).
DATACOMP = dict(input_format="parquet", url_col="url", caption_col="text", bbox_col="face_bboxes",
                save_additional_columns=["uid"], image_size=512, resize_mode="keep_ratio_largest",
                resize_only_if_bigger=True, encode_format="jpg", output_format="webdataset",
                number_sample_per_shard=10000, retries=2)


def main(metadata: str, out: str) -> None:
    out_dir = Path(out)
    common = dict(url_list=metadata, processes_count=1, thread_count=8, timeout=5)
    download(output_folder=str(out_dir / "datacomp"), **common, **DATACOMP)
    download(output_folder=str(out_dir / "unblurred"), **common,
             **{**DATACOMP, "bbox_col": None, "save_additional_columns": ["uid", "face_bboxes"]})
    reference = out_dir / "reference"
    reference.mkdir()
    resizer = dict(image_size=512, resize_mode="keep_ratio_largest", resize_only_if_bigger=True, encode_format="png",
                   encode_quality=1)
    plain, blurring = Resizer(**resizer), Resizer(**resizer, blurrer=BoundingBoxBlurrer())
    images = Path(metadata).parent / "images"
    for row in pq.read_table(metadata).to_pylist():
        if row["face_bboxes"]:
            data = (images / row["url"].rsplit("/", 1)[1]).read_bytes()
            for name, resize, boxes in (("resized", plain, None), ("blurred", blurring, row["face_bboxes"])):
                encoded, *_, error = resize(io.BytesIO(data), boxes)
                assert error is None, error
                (reference / f"{row['uid']}-{name}.png").write_bytes(encoded)
    print(json.dumps({"done": True}))


if __name__ == "__main__":  # img2dataset's workers are spawned: they import this file
    main(*sys.argv[1:])
