"""`theworld` with a record of every weight load: ``python tests/support/weight_spy.py fit --config ...``.

Before anything imports them, the loaders are wrapped: TheWorld's base-model load, safetensors' readers and
torch.load. Each call appends a line to the file named by $THEWORLD_WEIGHT_LOG, so a test can prove that a mistake
stopped the run before any weight was read (an empty file), and that a good run does read them (a non-empty one).
"""

import os
import sys


def _recording(name, fn):
    def wrapper(*args, **kwargs):
        with open(os.environ["THEWORLD_WEIGHT_LOG"], "a") as fh:
            fh.write(f"{name} {args[:1]!r}\n")
        return fn(*args, **kwargs)

    return wrapper


def install() -> None:
    """Wraps the loaders (before the CLI imports them by name)."""
    import safetensors
    import safetensors.torch
    import torch

    safetensors.safe_open = _recording("safetensors.safe_open", safetensors.safe_open)
    safetensors.torch.load_file = _recording("safetensors.torch.load_file", safetensors.torch.load_file)
    torch.load = _recording("torch.load", torch.load)
    from theworld.model import TheWorld

    TheWorld._load_base = staticmethod(_recording("TheWorld._load_base", TheWorld._load_base))


def main() -> None:
    install()
    from theworld.lit.cli import main as theworld

    sys.argv = ["theworld", *sys.argv[1:]]  # as the console script sees them (the CLI hides token flags there)
    theworld()


if __name__ == "__main__":
    main()
