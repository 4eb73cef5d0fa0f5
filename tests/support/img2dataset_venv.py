"""The venv that holds img2dataset 1.40.0 (its pins clash with ours), made once under ``~/.cache/theworld`` (or
``$THEWORLD_IMG2DATASET_VENV``) and kept while ``img2dataset_1_40_0.txt`` is unchanged; one installer at a time (a
file lock), the others wait for it.

``python tests/support/img2dataset_venv.py`` makes it ahead of the test that needs it: .ci/run starts it beside the
test suite (the install waits on the network, 1.5 min from a warm pip cache, up to 5 min cold).
"""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).parent / "img2dataset_1_40_0.txt"
VENV = Path(os.environ.get("THEWORLD_IMG2DATASET_VENV", Path.home() / ".cache/theworld/img2dataset-1.40.0"))


def img2dataset_python() -> Path:
    """The venv's python, after making the venv if it is missing or was made from other requirements."""
    python, marker, wanted = VENV / "bin/python", VENV / "theworld-requirements.txt", REQUIREMENTS.read_text()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / f"{VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.is_file() and marker.read_text() == wanted):
            subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
            pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, "--no-deps", "img2dataset==1.40.0"], check=True)
            subprocess.run([*pip, "-r", REQUIREMENTS], check=True)
            marker.write_text(wanted)
    return python


if __name__ == "__main__":
    print(img2dataset_python())
