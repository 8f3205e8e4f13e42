"""The heartbeat fills a stage's silences, and only its silences."""

import logging
import time

from absl import logging as absl_logging

from diffcorrupt.heartbeat import heartbeat


def _beats(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "still working" in r.getMessage()]


def test_a_silent_stage_gets_a_line_each_interval(caplog):
    caplog.set_level(logging.INFO)
    with heartbeat("demo: latent", every_s=0.2):
        time.sleep(1.0)
    beats = _beats(caplog)
    assert 2 <= len(beats) <= 5 and all(b.startswith("demo: latent: still working (") for b in beats)
    time.sleep(0.3)
    assert len(_beats(caplog)) == len(beats)  # nothing after the stage ends


def test_a_stage_that_logs_its_own_progress_gets_none(caplog):
    caplog.set_level(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)
    with heartbeat("demo: training", every_s=0.3):
        for step in range(12):
            absl_logging.info("train: step %d", step)
            time.sleep(0.05)
    assert _beats(caplog) == [] and len([r for r in caplog.records if "train: step" in r.getMessage()]) == 12
