"""The report entry point: ``python -m clustercam.report <run or multirun folder>``."""

from clustercam.reporting.cli import main

if __name__ == "__main__":
    main()
