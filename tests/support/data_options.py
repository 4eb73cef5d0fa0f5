"""A value other than the default for each data option some source cannot apply, as Python and as a CLI argument:
the tests that each such option stops a run on a source that cannot apply it take their values from here."""

VALUES = {
    "dataset_name": ("alice/pool", "alice/pool"),
    "dataset_split": ("validation", "validation"),
    "val_samples": (4, "4"),
    "question_column": ("question", "question"),
    "answer_column": ("reply", "reply"),
    "choices_column": ("options", "options"),
    "conversations_column": ("conversations", "conversations"),
    "image_column": ("image", "image"),
    "resampled": (True, "true"),
    "clip_score_threshold": (0.3, "0.3"),
    "subset_file": ("subset.npy", "subset.npy"),
    "metadata": ("meta/*.parquet", "meta/*.parquet"),
    "disallowed_header_directives": ((), "[]"),
    "blur_faces": (True, "true"),
    "verify_sha256": (True, "true"),
    "download_threads": (2, "2"),
    "max_image_bytes": (1000, "1000"),
}


def inapplicable(source: str) -> list[str]:
    """The options ``source`` cannot apply, by the registry."""
    from theworld.data.sources import SOURCES, source_options

    return [name for name in source_options() if name not in SOURCES[source].OPTIONS]


def cli_args(source: str) -> list[str]:
    """``--data.<option> <value>`` for every option ``source`` cannot apply."""
    return [arg for name in inapplicable(source) for arg in (f"--data.{name}", VALUES[name][1])]
