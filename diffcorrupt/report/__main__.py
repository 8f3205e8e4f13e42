"""``python -m diffcorrupt.report``: the report job (``diffcorrupt report``)."""

import sys

from diffcorrupt import jobs
from diffcorrupt.report.job import main

sys.exit(jobs.run("report", main))
