"""`theworld` runs forked from an interpreter that has imported it (and the weight spy) once: the bad-input
matrix's forty runs pay Python's and the libraries' start-up once instead of forty times.

Each run is still a process of its own: forked, in its own working directory and environment, its output in its own
files, its exit status its own, entering by the console script's function (``theworld.lit.cli:main``). What it skips
is the interpreter's start and the imports; the tests that start `theworld` afresh (tests/test_cli.py,
test_hub_cli.py) cover those. The zygote is started with the environment the runs share (HF_ENDPOINT and HF_HOME
are read when huggingface_hub is imported); a run's own variables (HF_TOKEN, read when asked for) are set in it.

    with Zygote(env) as zygote:
        result = zygote.run(["fit", "--config", "configs/demo.yaml"], cwd=tmp_path, env={"HF_TOKEN": None})
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from support.cli_runs import REPO


class Zygote:
    """One pre-imported interpreter that forks a run per request; requests are answered one at a time."""

    def __init__(self, env: dict):
        # As support/cli_runs.py runs `theworld`, and tests/ for this file's own imports.
        paths = [REPO / "tests/support", REPO / "tests", REPO]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
        for name, value in env.items():
            full_env.pop(name, None) if value is None else full_env.__setitem__(name, str(value))
        self._process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=full_env, text=True, bufsize=1)

    def run(self, args: list, cwd: Path, env: dict | None = None, timeout: float = 300):
        """Like ``subprocess.run(..., capture_output=True, text=True)`` of `theworld <args>`, with ``.seconds``."""
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = {"args": [str(a) for a in args], "cwd": str(cwd), "env": env or {}, "stdout": str(out),
                       "stderr": str(err), "timeout": timeout}
            start = time.monotonic()
            self._process.stdin.write(json.dumps(request) + "\n")
            answer = self._process.stdout.readline()
            if not answer:
                raise RuntimeError(f"the zygote ended (exit {self._process.wait()})")
            return SimpleNamespace(returncode=json.loads(answer)["returncode"], stdout=out.read_text(),
                                   stderr=err.read_text(), seconds=time.monotonic() - start)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._process.stdin.close()
        self._process.wait(timeout=60)


def _serve() -> None:
    import signal

    import weight_spy

    weight_spy.install()
    from theworld.lit.cli import main

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request, main)
        deadline = time.monotonic() + request["timeout"]
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(done[1])}), flush=True)


def _child(request: dict, main) -> None:
    """The run: never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        for name, value in request["env"].items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, str(value))
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdin = open(os.devnull)
        sys.argv = ["theworld", *request["args"]]
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    _serve()
