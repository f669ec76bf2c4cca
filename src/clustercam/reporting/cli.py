"""``clustercam-report <folder>...``: write the web page of run or multirun folders."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from clustercam.runtime.errors import exit_on_user_error


@exit_on_user_error  # a folder that is not a run: one line, no traceback
def main(argv: Sequence[str] | None = None) -> None:
    """Write ``<folder>/report/index.html`` for each folder and print where it is."""
    parser = argparse.ArgumentParser(
        prog="clustercam-report",
        description="Make a self-contained static web page of a run folder (config, metrics, "
                    "tables, figures) or of a multirun folder (every job's metrics, linking each "
                    "job's page), in <folder>/report/index.html.")
    parser.add_argument("folders", nargs="+", type=Path, metavar="folder",
                        help="a run folder (it holds config.yaml / metrics.json) or a multirun folder")
    args = parser.parse_args(argv)
    from clustercam.reporting.site import write_report

    for folder in args.folders:
        print(f"Report: {write_report(folder)}")


if __name__ == "__main__":
    main()
