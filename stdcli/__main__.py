"""`python -m stdcli` runs the command line, as the `stdcli` console script does."""

from .cli import main

if __name__ == "__main__":
    main()
