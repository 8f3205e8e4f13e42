"""``python -m diffcorrupt.demo``: the demo job (``diffcorrupt demo``)."""

import sys

from diffcorrupt import jobs
from diffcorrupt.demo.job import main

sys.exit(jobs.run("demo", main))
