"""Grids of training runs (``diffcorrupt sweep``): named grids, their expansion into runs with
readable folder names, and the shell commands that train and report them here, on a TPU pod or
through SLURM."""
