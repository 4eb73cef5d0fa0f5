"""`theworld` runs forked from an interpreter that has imported it once: a run skips Python's and the libraries'
start-up (about 8 s of CPU on the 2-core CI machine), which most of the suite's runs pay for nothing.

Each run is still a process of its own: forked, in its own working directory and environment, its output in its own
files, its exit status its own, entering by the CLI's function (``theworld.lit.cli:main``, which installs the stop handlers too). What it skips
is the interpreter's start and the imports; the tests that start `theworld` afresh (tests/test_cli.py,
test_hub_cli.py, the signal, kill and torchrun tests) cover those. A zygote is started with the environment its runs
share at import time (HF_ENDPOINT and HF_HOME are read when huggingface_hub is imported); a run's own variables
(HF_TOKEN, read when asked for) are set in it. support/cli_runs.py keeps one zygote per such environment.

It forks only while it has a single thread (a thread's locks would be held forever in the child): pyarrow's jemalloc
starts a background thread unless told not to, which the zygote does (an allocator setting, gone from the runs'
environment). A loader forkserver is started by each run, by exec, as in a fresh process.

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

REPO = Path(__file__).resolve().parents[2]
NO_JEMALLOC_THREAD = {"JE_ARROW_MALLOC_CONF": "background_thread:false"}


class Zygote:
    """One pre-imported interpreter that forks a run per request; requests are answered one at a time.
    ``spy_weights``: the runs record their weight loads (support/weight_spy.py, $THEWORLD_WEIGHT_LOG)."""

    def __init__(self, env: dict, spy_weights: bool = False):
        # As support/cli_runs.py runs `theworld`, and tests/ for this file's own imports.
        paths = [REPO / "tests/support", REPO / "tests", REPO]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
        for name, value in env.items():
            full_env.pop(name, None) if value is None else full_env.__setitem__(name, str(value))
        full_env.update(NO_JEMALLOC_THREAD)
        self._process = subprocess.Popen([sys.executable, __file__, *(["--spy-weights"] if spy_weights else [])],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=full_env, text=True,
                                         bufsize=1)

    def run(self, args: list, cwd: Path, env: dict | None = None, timeout: float = 300):
        """Like ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)`` of `theworld <args>`,
        with ``.seconds``."""
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = {"args": [str(a) for a in args], "cwd": str(cwd), "env": env or {}, "stdout": str(out),
                       "stderr": str(err), "timeout": timeout}
            start = time.monotonic()
            self._process.stdin.write(json.dumps(request) + "\n")
            line = self._process.stdout.readline()
            if not line:
                raise RuntimeError(f"the zygote ended (exit {self._process.wait()})")
            answer = json.loads(line)
            if answer["timed_out"]:
                raise subprocess.TimeoutExpired(["theworld", *request["args"]], timeout, out.read_text(),
                                                err.read_text())
            return SimpleNamespace(returncode=answer["returncode"], stdout=out.read_text(), stderr=err.read_text(),
                                   seconds=time.monotonic() - start)

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(spy_weights: bool) -> None:
    import signal

    if spy_weights:
        import weight_spy

        weight_spy.install()
    from theworld.lit.cli import main

    for name in NO_JEMALLOC_THREAD:  # read by the allocator at import; not part of the runs' environment
        del os.environ[name]
    for line in sys.stdin:
        request = json.loads(line)
        threads = os.listdir("/proc/self/task")
        if len(threads) != 1:
            raise RuntimeError(f"the zygote has {len(threads)} threads: a forked run could deadlock")
        pid = os.fork()
        if pid == 0:
            _child(request, main)
        deadline = time.monotonic() + request["timeout"]
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        timed_out = done[0] == 0
        if timed_out:
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(done[1]), "timed_out": timed_out}), flush=True)


def _child(request: dict, main) -> None:
    """The run: never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        for name, value in request["env"].items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, str(value))
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the zygote's request pipe
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
    _serve(spy_weights="--spy-weights" in sys.argv[1:])
