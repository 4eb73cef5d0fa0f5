"""DataConfig: the ``data:`` settings, shared by the data module and the sources it builds."""

from __future__ import annotations

from dataclasses import dataclass, fields

from theworld.data import registry
from theworld.errors import ConfigError

DEFAULT_PROMPT = "Describe the image."


@dataclass
class DataConfig:
    """Where the image-caption pairs (or question-answer samples) come from and how they are read.

    Attributes:
        source: "webdataset": img2dataset .tar shards (and latent caches from `theworld cache_latents`); "hf":
            DataComp-style metadata (parquet files or a Hub dataset) whose images are downloaded by URL; or a source
            registered with theworld.data.sources.register_source (docs/data.md, "Adding a source").
        train_data: Training shards (paths, globs, folders, {00000..00099} braces, http(s) URLs) or parquet files.
        val_data: Held-out shards or parquet files for validation (never overlapping train_data).
        dataset_name: A Hub dataset of DataComp metadata to stream (source hf), e.g. mlfoundations/datacomp_small.
        dataset_split: Split of dataset_name to stream.
        val_samples: Source hf: hold out the first K rows for validation; training skips them.
        batch_size: Samples per device per step (the global batch is batch_size x devices x num_nodes).
        val_batch_size: Samples per validation and predict batch (default: batch_size).
        num_workers: DataLoader worker processes per device; they decode, resize, tokenise (and download).
        prompt: The user prompt every caption answers (question-answer samples bring their own).
        question_column: Source hf: read question-answer rows, the question from this column (its answer from
            answer_column; with a list in choices_column, a multiple-choice question whose answer is the option's
            letter, e.g. "(A)"). None: caption rows (the text column).
        answer_column: Source hf: the answers of question_column's questions.
        choices_column: Source hf: the options of a multiple-choice question (a column that is absent or null:
            an open question).
        conversations_column: Source hf: read single-turn LLaVA-style conversations from this column instead
            ([{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]).
        image_column: Source hf: the column holding each row's image (bytes, or a `datasets` Image's {bytes, path})
            instead of a URL to download.
        max_caption_tokens: Captions are cut to this many tokens.
        shuffle_buffer: Samples shuffled in each worker (0: read in order; resume is exact only with 0).
        seed: Seed of the shard order and shuffle buffers.
        resampled: Source webdataset: each loader worker draws shards at random with replacement, without end
            (open_clip's --dataset-resampled), for very long shard lists and runs of many passes. The draws are
            seeded by seed, the epoch and the worker, so a resume continues them exactly; an epoch ends at
            num_samples, a run at trainer.max_steps.
        num_samples: Cap each epoch at this many samples (split evenly over devices).
        min_image_size: Images with a shorter side are skipped (too_small).
        clip_score_threshold: Skip samples whose clip_b32_similarity_score is lower (low_clip_score): the metadata
            row's (source hf), or the row of data.metadata with the sample's uid (source webdataset).
        subset_file: DataComp's subset file (.npy of uids, as its filtering track and resharder.py take them): train
            only on the samples whose uid it lists; the others are counted as not_in_subset.
        metadata: Source webdataset: DataComp's metadata parquet files, joined to each shard sample by its uid, for
            clip_score_threshold and verify_sha256 (img2dataset's shards keep neither column).
        disallowed_header_directives: Source hf: images served with one of these X-Robots-Tag directives are
            skipped (opted_out), as DataComp's downloader (img2dataset 1.40.0) refuses them; [] downloads them anyway.
        blur_faces: Blur the face_bboxes of the metadata (source hf) or of each shard sample's .json (source
            webdataset), never weaker than DataComp's downloader, img2dataset 1.40.0 (see docs/data.md, "DataComp's
            rules beside this loader's"). Default (null): the hf source blurs; the webdataset source does not, since
            DataComp's shards are blurred by that downloader already (true blurs shards made without its bbox_col).
        datacomp_resize: Shrink each image to at most 512 px on its longer side (keeping the ratio, never
            enlarging) before the blur, as DataComp's download does, so hf-source pixels match its shards.
        verify_sha256: Skip images whose bytes differ from the metadata's sha256 (hash_mismatch): the downloaded
            bytes (source hf), or the sha256 img2dataset computed from the bytes it downloaded (the shard's .json)
            against data.metadata's (source webdataset).
        download_timeout_s: Seconds allowed per image download or shard request.
        download_retries: Retries of a download after a timeout, 408/429/5xx or a dropped connection.
        download_backoff_s: First wait before a retry; it doubles each time.
        download_threads: Source hf: parallel image downloads per loader worker.
        max_image_pixels: Images with more pixels are skipped (decompression_bomb), checked before decoding.
        max_image_bytes: Source hf: image downloads larger than this are skipped (too_large), checked on the
            Content-Length and on the bytes read, so a loader worker's memory stays bounded whatever a server sends.
        max_consecutive_bad: A worker that skips this many records in a row stops the run with the counts.
        predict_data: Images for `theworld predict`: a folder, a glob or a list of paths.
    """

    source: registry.SourceName = "webdataset"
    train_data: str | list[str] | None = None
    val_data: str | list[str] | None = None
    dataset_name: str | None = None
    dataset_split: str = "train"
    val_samples: int = 0
    batch_size: int = 8
    val_batch_size: int | None = None
    num_workers: int = 4
    prompt: str = DEFAULT_PROMPT
    question_column: str | None = None
    answer_column: str = "answer"
    choices_column: str = "choices"
    conversations_column: str | None = None
    image_column: str | None = None
    max_caption_tokens: int = 64
    shuffle_buffer: int = 0
    seed: int = 0
    resampled: bool = False
    num_samples: int | None = None
    min_image_size: int = 32
    clip_score_threshold: float | None = None
    subset_file: str | None = None
    metadata: str | list[str] | None = None
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    blur_faces: bool | None = None
    datacomp_resize: bool = False
    verify_sha256: bool = False
    download_timeout_s: float = 10.0
    download_retries: int = 2
    download_backoff_s: float = 0.5
    download_threads: int = 16
    max_image_pixels: int = 50_000_000
    max_image_bytes: int = 32_000_000
    max_consecutive_bad: int = 1000
    predict_data: str | list[str] | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value, smallest = getattr(self, field.name), _SMALLEST.get(field.name)
            if smallest is not None and value is not None and value < smallest:
                raise ConfigError(f"data.{field.name}={value}: it must be at least {smallest}.")
        # A list from YAML or JSON names the same directives as the default tuple.
        self.disallowed_header_directives = tuple(self.disallowed_header_directives)
        # Which options the chosen source applies is the source registry's to say (theworld.data.sources, which
        # builds on this module): its refuse_inapplicable() checks a config where one is read from the user.


# The settings that are counts (or seconds): the smallest value each can take.
_SMALLEST = {
    "batch_size": 1,
    "val_batch_size": 1,
    "max_caption_tokens": 1,
    "num_samples": 1,
    "val_samples": 0,
    "num_workers": 0,
    "shuffle_buffer": 0,
    "min_image_size": 0,
    "download_retries": 0,
    "download_timeout_s": 1e-3,
    "download_backoff_s": 0,
    "download_threads": 1,
    "max_image_pixels": 1,
    "max_image_bytes": 1,
    "max_consecutive_bad": 1,
}
