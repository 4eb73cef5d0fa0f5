"""Imported by the loader workers' forkserver only (``multiprocessing`` preload, see :mod:`theworld.data.workers`):
what every worker needs is imported once there (torch, PIL with its plugins, the data sources, and the transformers
classes a pickled processor is made of), so each worker forked from the forkserver starts with it loaded: a
worker that imported them itself would take seconds to unpickle its dataset (measured: 9.6 s against 0.65 s).

It also ties the forkserver's life to the trainer's: when the trainer dies without a word (``kill -9``, the OOM
killer) the kernel ends the forkserver, and the workers' own watchdog (PyTorch's, which watches their parent, the
forkserver) ends them within seconds; the resource tracker ends once none of them holds its pipe. Otherwise all of
them lived on under PID 1, holding their memory and the job's output pipe.
"""

import ctypes
import os
import signal
import sys

import PIL.Image
import torch  # noqa: F401
from transformers import Gemma3Processor, PreTrainedTokenizerFast  # noqa: F401

import theworld.data.processing  # noqa: F401
import theworld.data.sources  # noqa: F401  (every source registered there)

PIL.Image.init()  # the image plugins, imported lazily otherwise: in every worker, at its first image

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_the_trainer() -> None:
    """SIGKILL this process when its parent, the trainer that started it by exec, dies (Linux's parent-death
    signal; the trainer starts the forkserver from its main thread, which lives as long as the trainer)."""
    if not sys.platform.startswith("linux"):
        return
    trainer = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != trainer:  # the trainer died before the signal was asked for
        os._exit(1)


die_with_the_trainer()
