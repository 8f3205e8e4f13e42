"""What every job entry point shares: flag parsing with config overrides, and one-sentence errors.

Each job is ``python -m diffcorrupt.<job>`` and ``diffcorrupt <job>``, with the same flags. Flags are
plain argparse (no global registry, so the demo and the tests can run several jobs in one process);
``--config=path.py[:preset]`` names the config and ``--config.<key>=<value>`` overrides its keys.
"""

from __future__ import annotations

import argparse
import logging as std_logging
import sys
import traceback
from typing import Callable, NoReturn, Sequence

import ml_collections
from absl import logging

from diffcorrupt.config.loading import load_config
from diffcorrupt.errors import UserError
from diffcorrupt.xla_cpu_flags import add_cpu_flags

_OVERRIDE = "--config."
_READ_ONLY_NOTICE = "Given directory is read only=%s"


class JobParser(argparse.ArgumentParser):
    """argparse whose every mistake (an unknown flag, a missing one, a bad value) is the job's one
    sentence and exit status 2, not argparse's usage block."""

    def __init__(self, job: str, description: str, config: bool = True, prog: str | None = None):
        super().__init__(prog=prog or f"diffcorrupt {job}", description=description)
        if config:
            self.add_argument("--config", required=True, help="configs/<name>.py[:<preset>]")

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (`{self.prog} --help` lists the flags)")

    def parse_job(self, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
        """(flags, config overrides as 'key=value')."""
        overrides = [arg[len(_OVERRIDE):] for arg in argv if arg.startswith(_OVERRIDE)]
        flags = self.parse_args([arg for arg in argv if not arg.startswith(_OVERRIDE)])
        return flags, overrides

    def parse_with_config(self, argv: Sequence[str]) -> tuple[argparse.Namespace, ml_collections.ConfigDict]:
        flags, overrides = self.parse_job(argv)
        return flags, load_config(flags.config, overrides)


def run(job: str, main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
        prog: str | None = None) -> int:
    """Runs a job's main, turning a ``UserError`` into one line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    add_cpu_flags()
    try:
        return int(main(argv) or 0)
    except UserError as err:
        print(f"{prog or f'diffcorrupt {job}'}: error: {one_line(str(err))}", file=sys.stderr)
        return 2


def one_line(message: str) -> str:
    """``message`` with its control characters escaped: a value typed by the user or read from a
    file (a newline, a terminal escape) cannot break the sentence over lines or recolour the terminal."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in message)


def _quiet_checkpoint_library(record) -> bool:
    """Keeps orbax's per-save chatter (a dozen INFO lines a checkpoint) out of a job's log, and the
    tracebacks of its warnings and errors: a save that fails is the job's one sentence, which
    orbax's threads would otherwise precede with the same failure, once from each."""
    if "/orbax/" not in record.pathname:
        return True
    if record.msg == _READ_ONLY_NOTICE:  # the sampler's manager is read-only by design
        return False
    record.exc_info = record.exc_text = None
    return record.levelno >= logging.converter.STANDARD_WARNING


def _not_an_orbax_task(record) -> bool:
    """asyncio's "exception was never retrieved" for orbax's reads and writes and tensorstore's
    futures under them (raised in C++: no Python frame but asyncio's own wrapper's), logged as the
    loop lets them go, after the job's sentence: the same failure again. The jobs' own code starts
    no asyncio work."""
    message = record.getMessage()
    if "/orbax/" in message:
        return False
    frames = traceback.extract_tb(record.exc_info[2]) if record.exc_info else []
    if "exception was never retrieved" in message and all("/asyncio/" in frame.filename for frame in frames):
        return False
    return not any("/orbax/" in frame.filename for frame in frames)


def _ignore_abandoned_checkpoint_io(hook):
    """orbax's reads and writes that outlive the save or restore they served: when a save fails,
    tensorstore still reports each write that was in flight to orbax's event loop, closed by then;
    when a checkpoint does not read back, orbax's other reads of it fail unawaited. Python prints
    each as an unraisable traceback (hundreds for one full disk) that says nothing the job has not
    said already: the failed save's sentence, or the warning that the checkpoint does not read back."""

    def unraisablehook(unraisable) -> None:
        value, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        closed_loop = isinstance(value, RuntimeError) and str(value) == "Event loop is closed"
        if not (closed_loop or (code is not None and "/orbax/" in code.co_filename)):
            hook(unraisable)

    return unraisablehook


def log_progress() -> None:
    """INFO logging for long jobs (progress, metrics), without the checkpoint library's chatter."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_logger().addFilter(_quiet_checkpoint_library)
    std_logging.getLogger("asyncio").addFilter(_not_an_orbax_task)
    sys.unraisablehook = _ignore_abandoned_checkpoint_io(sys.unraisablehook)
