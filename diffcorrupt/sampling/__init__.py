"""Sampling a trained run: its EMA weights, the sharded generator and the sample files."""
