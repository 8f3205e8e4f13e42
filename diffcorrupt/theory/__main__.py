"""``python -m diffcorrupt.theory``: the theory job (``diffcorrupt theory``)."""

import sys

from diffcorrupt import jobs
from diffcorrupt.theory.job import main

sys.exit(jobs.run("theory", main))
