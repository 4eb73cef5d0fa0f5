"""Imported by the loader workers' forkserver only (``multiprocessing`` preload, see :mod:`theworld.data.workers`):
what every worker needs is imported once there (torch, PIL with its plugins, the data sources, and the transformers
classes a pickled processor is made of), so each worker forked from the forkserver starts with it loaded: a
worker that imported them itself would take seconds to unpickle its dataset (measured: 9.6 s against 0.65 s).
"""

import PIL.Image
import torch  # noqa: F401
from transformers import Gemma3Processor, PreTrainedTokenizerFast  # noqa: F401

import theworld.data.parquet  # noqa: F401
import theworld.data.processing  # noqa: F401
import theworld.data.webdataset  # noqa: F401

PIL.Image.init()  # the image plugins, imported lazily otherwise: in every worker, at its first image
