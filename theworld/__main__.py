"""``theworld`` (the console script) and ``python -m theworld``: the stop signals' handlers first, then the imports
(8 s and more on a busy machine) and the CLI, so a signal during start-up ends the run as any other stop does."""

import sys

from theworld import stops


def main() -> None:
    stops.install()
    try:
        from theworld.lit.cli import main as run_cli
    except BaseException as err:
        stop = err if isinstance(err, stops.RunStopped) else stops.unfinished_stop()  # or wrapped by an import
        if stop is None:
            raise
        stops.exiting(stop)
        stops.report(stop, sys.argv[1:])
        sys.exit(stop.code)
    run_cli()


if __name__ == "__main__":
    main()
