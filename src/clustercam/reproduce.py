"""Entry point ``python -m clustercam.reproduce``: the study lives in :mod:`clustercam.studies.reproduce`."""

from clustercam.studies.reproduce import main

if __name__ == "__main__":
    main()
