"""Entry point ``python -m clustercam.compare``: the study lives in :mod:`clustercam.studies.compare`."""

from clustercam.studies.compare import main

if __name__ == "__main__":
    main()
