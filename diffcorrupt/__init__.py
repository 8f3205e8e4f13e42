"""diffcorrupt: pre-training conditional diffusion models on deliberately corrupted conditions."""

import os

# TensorFlow comes in only through clu's summary writer and tensorflow-datasets, and computes
# nothing of ours; its oneDNN notice (two C++ log lines at import) would otherwise open every job's
# output, including the one line of a refused command. A value the user sets is kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"
