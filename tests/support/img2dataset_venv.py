"""The venv that holds img2dataset 1.40.0 (its pins clash with ours), installed from a complete lock
(``img2dataset_1_40_0.lock``: every package ``==`` a version, ``--no-deps``), so a venv made next month holds what
this one does. It lives at ``$THEWORLD_IMG2DATASET_VENV`` (default ``~/.cache/theworld/img2dataset-1.40.0``) and is
kept while the lock is unchanged; one installer at a time (a file lock), the others wait for it.

``python tests/support/img2dataset_venv.py`` makes it ahead of the test that needs it: .ci/run starts it beside the
test suite, with the venv inside the CI workspace, so every CI run builds it from nothing and a cached venv cannot
hide a broken recipe.
"""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).parent / "img2dataset_1_40_0.lock"
VENV = Path(os.environ.get("THEWORLD_IMG2DATASET_VENV", Path.home() / ".cache/theworld/img2dataset-1.40.0"))


def img2dataset_python() -> Path:
    """The venv's python, after making the venv if it is missing, was made from another lock, or cannot import
    img2dataset."""
    python, marker, wanted = VENV / "bin/python", VENV / "theworld-lock.txt", LOCK.read_text()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / f"{VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.is_file() and marker.read_text() == wanted):
            subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
            subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                            "-r", LOCK], check=True)
            # The lock is the closure: an import that fails here is a lock to fix, not a test failure to chase.
            subprocess.run([python, "-c", "import img2dataset"], check=True)
            marker.write_text(wanted)
    return python


if __name__ == "__main__":
    print(img2dataset_python())
