"""Imported by the loader workers' forkserver only (``multiprocessing`` preload, see :mod:`theworld.data.workers`):
what every worker needs is imported once there (torch, PIL with its plugins, the processing and the data
sources), so each worker forked from the forkserver starts with it loaded."""

import PIL.Image
import torch  # noqa: F401

import theworld.data.parquet  # noqa: F401
import theworld.data.processing  # noqa: F401
import theworld.data.webdataset  # noqa: F401

PIL.Image.init()  # the image plugins, imported lazily otherwise: in every worker, at its first image
