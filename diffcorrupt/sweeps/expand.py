"""A grid -> its runs: each a config, its overrides in order, and a folder named by its settings.

The folder name is the settings' labels joined by '_' plus the seed (``eta0.05-symmetric_seed0``),
not a hash or an index, so that a folder says what it holds, stays the same when the grid grows,
and a rerun finds its runs again. Names are checked to be unique and filesystem-safe here,
before anything starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any, Sequence

import ml_collections

from diffcorrupt.config.loading import load_config
from diffcorrupt.config.validate import validate
from diffcorrupt.errors import UserError
from diffcorrupt.sweeps.grids import Grid

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# In a grid's override values, the run's seed: a distilled run names the teacher of its own seed.
SEED_FIELD = "{seed}"


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    config: str  # configs/<name>.py[:<preset>]
    overrides: tuple[str, ...]  # 'key=value', applied in order
    workdir: Path

    def train_args(self) -> list[str]:
        """The flags of ``diffcorrupt train`` for this run."""
        return [f"--config={self.config}", f"--workdir={self.workdir}", *(f"--config.{o}" for o in self.overrides)]

    def load(self) -> ml_collections.ConfigDict:
        return load_config(self.config, self.overrides)


def expand(grid: Grid, root: Path, overrides: Sequence[str] = ()) -> list[Run]:
    """Every run of ``grid`` under ``root``, in axis order then seed order; ``overrides`` ('key=value',
    from the command line) apply to all runs, after the grid's own."""
    _check_overrides(grid, overrides)
    runs = []
    for settings in itertools.product(*grid.axes):
        for seed in grid.seeds:
            labels = [s.label for s in settings if s.label] + [f"seed{seed}"]
            name = _UNSAFE.sub("-", "_".join(labels))
            pairs = [*grid.fixed, *(pair for s in settings for pair in s.overrides), ("seed", seed)]
            texts = tuple(f"{k}={_text(v).replace(SEED_FIELD, str(seed))}" for k, v in pairs)
            runs.append(Run(name, grid.config, texts + tuple(overrides),
                            root / name))
    _check_unique(grid, runs)
    return runs


def check_runs(grid: Grid, runs: Sequence[Run]) -> dict[str, ml_collections.ConfigDict]:
    """Loads and validates every run's config before any starts: a typo in the last run of a grid
    should cost seconds, not the runs before it. The data is checked by train, where it is read."""
    path = grid.config.partition(":")[0]
    if not Path(path).is_file():
        raise UserError(f"grid '{grid.name}' trains {path}, which is not under the current directory; run the sweep "
                        "from the repository root")
    configs = {}
    for run in runs:
        try:
            configs[run.name] = run.load()
            validate(configs[run.name], check_data=False)
        except UserError as err:
            raise type(err)(f"grid '{grid.name}', run '{run.name}': {err}") from None
    return configs


def select(grid: Grid, runs: Sequence[Run], only: str) -> list[Run]:
    """The runs whose name contains ``only`` (all when it is empty)."""
    chosen = [run for run in runs if only in run.name]
    if not chosen:
        names = ", ".join(run.name for run in runs[:6]) + (", ..." if len(runs) > 6 else "")
        raise UserError(f"no run of grid '{grid.name}' has '{only}' in its name; its runs are {names}")
    return chosen


def _text(value: Any) -> str:
    """A value as ``--config.key=<text>`` parses it back (booleans as true/false, floats exactly)."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def _check_overrides(grid: Grid, overrides: Sequence[str]) -> None:
    """Refuses a command-line override of a key the grid varies: every run would get the same value
    while its folder name still claimed its own."""
    varied = {key for axis in grid.axes for s in axis for key, _ in s.overrides} | {"seed"}
    for override in overrides:
        key = override.partition("=")[0]
        if key in varied:
            raise UserError(f"--config.{key} is varied by grid '{grid.name}', so it cannot be set for all its runs; "
                            "use --only to pick runs, or define a grid file with other values")


def _check_unique(grid: Grid, runs: Sequence[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    repeated = sorted(name for name, count in seen.items() if count > 1)
    if repeated:
        raise UserError(f"grid '{grid.name}' gives several runs the name {repeated[0]}; give its settings distinct labels")
