"""Each run as a self-contained static web page: ``clustercam-report <run or multirun folder>``.

The page (``<folder>/report/index.html``) shows the config, the headline metrics, every
table (sortable) and the figures in galleries; a multirun's page is a table of its jobs'
metrics linking each job's page. Written at the end of every run when ``report=true``.
"""

from clustercam.reporting.cli import main
from clustercam.reporting.site import write_multirun_report, write_report, write_run_report

__all__ = ["main", "write_report", "write_run_report", "write_multirun_report"]
