"""`python -m stdcli` and the `stdcli` console script: the command line, with Ctrl-C during its own imports
ending as quietly as anywhere else."""

import os
import sys

from .errors import STOPS, Terminated


def main() -> None:
    STOPS.install()
    try:
        from .cli import main as run

        run()
    except KeyboardInterrupt as stop:  # during the imports above
        terminated = isinstance(stop, Terminated)
        print(f"stdcli: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        exit_after_stop(143 if terminated else 130)
    except SystemExit as done:
        if STOPS.first is None:
            raise
        exit_after_stop(done.code if isinstance(done.code, int) else 1)
    finally:
        STOPS.finished()


def exit_after_stop(code: int) -> None:
    """End a stopped run with its own status. A plain exit could end it by SIGINT instead: CPython does so when the
    Ctrl-C passed through code that an extension ran (torch's imports do), even though stdcli handled it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
