"""`python -m stdcli` and the `stdcli` console script: the command line, with Ctrl-C during its own imports
ending as quietly as anywhere else."""

import sys

from .errors import STOPS, Terminated


def main() -> None:
    STOPS.install()
    try:
        from .cli import main as run
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"stdcli: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        sys.exit(143 if terminated else 130)
    try:
        run()
    finally:
        STOPS.finished()


if __name__ == "__main__":
    main()
