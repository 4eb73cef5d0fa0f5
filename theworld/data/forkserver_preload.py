"""Imported by the loader workers' forkserver only (``multiprocessing`` preload, see :mod:`theworld.data.workers`);
nothing else imports it.

It imports once what every worker needs (torch, PIL with its plugins, the processing and data sources), so each
worker forked from the forkserver starts with them loaded. And it makes the forkserver ignore SIGTERM (it ignores
SIGINT itself): a signal sent to the whole job must not end the process that starts workers while the trainer
saves and stops; the forkserver still ends with the trainer, when the pipe the trainer holds closes.
"""

import signal

import PIL.Image
import torch  # noqa: F401

import theworld.data.parquet  # noqa: F401
import theworld.data.processing  # noqa: F401
import theworld.data.webdataset  # noqa: F401

PIL.Image.init()  # the image plugins, imported lazily otherwise: in every worker, at its first image
signal.signal(signal.SIGTERM, signal.SIG_IGN)
