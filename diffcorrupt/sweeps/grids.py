"""Named grids: a base preset, axes whose product is the set of runs, and seeds.

An axis is a tuple of *settings* (a label for the run name plus config overrides), not just one
key's values, because the paper's grids are not all products of single keys: its eta grid has one
clean run rather than one per corruption kind, and its baselines are one run each of several
keys. ``values`` builds the plain one-key axis; axes concatenate with ``+``. Labels name the
settings, so the same settings get the same folder name in every grid, and grids that share runs
(the clean run, CEP-U at gamma 1) share them when they share a ``--root``.

The paper's values (paper.md section 2 and 6) are the module constants below.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Any, Iterable, Mapping

from diffcorrupt.config.loading import suggest
from diffcorrupt.errors import UserError

ETAS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2)
CC3M_ETAS = ETAS + (0.3,)
CLASS_KINDS = ("symmetric", "asymmetric")
CEP_KINDS = ("uniform", "gaussian")
GAMMAS = (0.1, 0.5, 1.0, 5.0, 10.0)
# [I] not in the paper: the baselines' strengths (Ning et al.'s 0.1 for input perturbation) and the
# eta of Table 7's fixed-vs-random comparison (Table 5's 2.5%).
INPUT_PERTURBATION = 0.1
CONDITION_DROPOUT = 0.1
LABEL_SMOOTHING = 0.1
TABLE7_ETA = 0.025
SMALL_ETAS = (0.0, 0.025, 0.05, 0.1, 0.2)
SMALL_SEEDS = (0, 1, 2)

IMAGENET_REPORT = ("--reference=references/VIRTUAL_imagenet256_labeled.npz",)
CC3M_REPORT = ("--captions=references/coco_val2014_captions.txt", "--reference=references/coco_val2014_256.npz")
SHAPES_REPORT = ("--captions=references/shapes_test_captions.txt",)
REPRO_REPORT = ("--cfg_scale=1,2,3", "--num_samples=1000", "--sampler=dpm", "--steps=25", "--features=classifier")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of an axis: its part of the run name and the config overrides it applies."""

    label: str
    overrides: tuple[tuple[str, Any], ...]


Axis = tuple[Setting, ...]


@dataclasses.dataclass(frozen=True)
class Grid:
    """Runs = product of ``axes`` x ``seeds``, each on ``config`` with ``fixed`` overrides first."""

    name: str
    config: str  # configs/<name>.py[:<preset>], relative to the repository root
    axes: tuple[Axis, ...]
    seeds: tuple[int, ...] = (0,)
    fixed: tuple[tuple[str, Any], ...] = ()
    report: tuple[str, ...] = ()  # extra `diffcorrupt report` flags (reference, captions)
    rows: str = ""  # glob of committed results.csv of runs from earlier sessions, for the all-runs report
    doc: str = ""  # what it reproduces and the paper's numbers


def setting(label: str, overrides: Mapping[str, Any]) -> Setting:
    return Setting(label, tuple(overrides.items()))


def values(key: str, *choices: Any) -> Axis:
    """The plain axis: one key over ``choices``, labelled '<last part of the key><value>'."""
    leaf = key.rsplit(".", 1)[-1]
    return tuple(setting(f"{leaf}{fmt(value)}", {key: value}) for value in choices)


def fmt(value: Any) -> str:
    """A value as it appears in a run name: 0.025, 1 (not 1.0), 1e-05, true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def etas(ratios: Iterable[float], kinds: Iterable[str] = ("symmetric",), mode: str = "fixed") -> Axis:
    """Corruption ratios x kinds, with the clean run once ('eta0'), not once per kind."""
    ratios = tuple(ratios)
    clean = (setting("eta0", {"data.corruption.ratio": 0.0}),) if 0.0 in ratios else ()
    suffix = "" if mode == "fixed" else f"-{mode}"
    return clean + tuple(
        setting(f"eta{fmt(ratio)}-{kind}{suffix}",
                {"data.corruption.ratio": ratio, "data.corruption.kind": kind, "data.corruption.mode": mode})
        for kind in kinds for ratio in ratios if ratio
    )


def cep(kind: str, gamma: float = 1.0) -> Setting:
    return setting(f"cep-{kind}-{fmt(gamma)}", {"model.cep.kind": kind, "model.cep.gamma": gamma})


def baselines(table6: bool) -> Axis:
    """Table 1's row (none, input perturbation, CEP-U, CEP-G), plus Table 6's dropout and label smoothing."""
    runs = (setting("eta0", {"data.corruption.ratio": 0.0}),
            setting(f"input-perturbation-{fmt(INPUT_PERTURBATION)}", {"diffusion.input_perturbation": INPUT_PERTURBATION}),
            cep("uniform"), cep("gaussian"))
    if table6:
        runs += (setting(f"condition-dropout-{fmt(CONDITION_DROPOUT)}", {"model.condition_dropout": CONDITION_DROPOUT}),
                 setting(f"label-smoothing-{fmt(LABEL_SMOOTHING)}", {"model.label_smoothing": LABEL_SMOOTHING}))
    return runs


def _family(name: str, config: str, *, kinds: tuple[str, ...], ratios: tuple[float, ...], ablations: bool,
            report: tuple[str, ...], notes: Mapping[str, str]) -> list[Grid]:
    """The paper's studies on one base preset: ``name`` itself is the eta (x kind) grid, ``name_baselines``
    Table 1's row; with ``ablations`` (the LDM-4 ImageNet study) also Table 6's baselines,
    ``name_cep_gamma`` and Table 7's ``name_fixed_random``."""
    grids = [
        Grid(name, config, (etas(ratios, kinds),), report=report,
             doc=f"eta in {', '.join(fmt(100 * r) for r in ratios)}% x {' and '.join(kinds)}, clean once. " + notes["eta"]),
        Grid(f"{name}_baselines", config, (baselines(ablations),), report=report,
             doc="clean, input perturbation, CEP-U, CEP-G" + (", condition dropout, label smoothing" if ablations else "")
                 + ". " + notes["baselines"]),
    ]
    if ablations:
        kind = kinds[0]
        grids += [
            Grid(f"{name}_cep_gamma", config, (tuple(cep(k, g) for k in CEP_KINDS for g in GAMMAS),), report=report,
                 doc=f"CEP-U and CEP-G at gamma in {', '.join(map(fmt, GAMMAS))} on clean data. " + notes["cep_gamma"]),
            Grid(f"{name}_fixed_random", config,
                 ((cep("uniform"),) + etas((TABLE7_ETA,), (kind,)) + etas((TABLE7_ETA,), (kind,), mode="random"),),
                 report=report,
                 doc=f"Table 7 without fixed CEP (not implemented): CEP-U, and {kind} eta {fmt(100 * TABLE7_ETA)}% drawn "
                     "once or anew each epoch. " + notes["fixed_random"]),
        ]
    return grids


_LDM = "Paper (FID at guidance 2.0): "
_PAPER = (
    _family("imagenet_ldm4", "configs/imagenet.py:ldm4", kinds=CLASS_KINDS, ratios=ETAS, ablations=True,
            report=IMAGENET_REPORT, notes={
                "eta": "Paper: slight eta (<= 7.5%) beats clean (FID 9.44 at guidance 2.0) in FID, IS, precision and "
                       "recall; Table 5 at guidance 2.5, clean vs 2.5%: 12.7 vs 12.2 at 100K steps, 10.1 vs 9.0 at 150K.",
                "baselines": _LDM + "clean 9.44, input perturbation 9.18, CEP-U 7.00, CEP-G 6.91, dropout 8.67, "
                                    "label smoothing 8.49.",
                "cep_gamma": "Paper: gamma = 1 in all main results (CEP-U 7.00, CEP-G 6.91 at guidance 2.0); the "
                             "ablation's other numbers are not in paper.md.",
                "fixed_random": _LDM + "CEP-U 7.00, fixed CEP-U 7.94, random data corruption 8.13, fixed 8.44.",
            })
    + _family("imagenet_dit", "configs/imagenet.py:dit_xl2", kinds=CLASS_KINDS, ratios=ETAS, ablations=False,
              report=IMAGENET_REPORT, notes={
                  "eta": "Paper: slight eta (<= 7.5%) beats clean (FID 6.76, IS 179.7 at guidance 1.75); more hurts.",
                  "baselines": "Paper (FID at guidance 1.75): clean 6.76, input perturbation 6.75, CEP-U 5.51, "
                               "CEP-G 5.92.",
              })
    + _family("cc3m", "configs/cc3m.py", kinds=("swap",), ratios=CC3M_ETAS, ablations=False, report=CC3M_REPORT,
              notes={
                  "eta": "Paper: slight swap beats clean (FID 19.85, IS 30.1 at guidance 3.0, MS-COCO captions) in FID, "
                         "IS and CLIP score.",
                  "baselines": "Paper (FID at guidance 3.0): clean 19.85, input perturbation 19.48, CEP-U 17.93, "
                               "CEP-G 18.59.",
              })
)
_TWIN = ("The cheap twin of {paper}: the same axes on {data}; compare directions, not numbers "
         "(Frechet distance in classifier features, conditional accuracy).")
_SMALL = (
    _family("fmnist_small", "configs/fmnist.py:small", kinds=CLASS_KINDS, ratios=ETAS, ablations=True, report=(),
            notes={key: _TWIN.format(paper="imagenet_ldm4" + ("" if key == "eta" else f"_{key}"), data="Fashion-MNIST")
                   for key in ("eta", "baselines", "cep_gamma", "fixed_random")})
    + _family("shapes_small", "configs/shapes.py:small", kinds=("swap",), ratios=CC3M_ETAS, ablations=False,
              report=SHAPES_REPORT,
              notes={key: _TWIN.format(paper="cc3m" + ("" if key == "eta" else f"_{key}"), data="captioned shapes")
                     for key in ("eta", "baselines")})
)
REPRO_SMALL = Grid(
    "repro_small", "configs/fmnist.py:latent", (etas(SMALL_ETAS) + (cep("uniform"), cep("gaussian")),),
    seeds=SMALL_SEEDS, report=REPRO_REPORT,
    # The recipe the measured runs used (2026-11-28), before the preset moved to v-prediction, min-SNR-5,
    # lr 2e-3 and 1,000 steps. Their latents were also mirrored at random, which the pipeline no longer does.
    fixed=(("diffusion.prediction", "eps"), ("diffusion.min_snr_gamma", 0.0), ("train.lr", 1e-3),
           ("train.num_steps", 1_200), ("checkpoint.every_steps", 600)),
    doc="The study in small, measured in docs/reproduction.md: latent DiT-T/2 on Fashion-MNIST at eta in 0, 2.5, 5, "
        "10, 20% (symmetric) and clean with CEP-U and CEP-G, 3 seeds each, 1,200 steps each; the report's summary "
        "gives mean +- std over seeds. Needs the latents of configs/fmnist.py's `latent` preset.",
)
# The memorization regime (issue 17): training-set size x corruption, on class-balanced subsets.
MEMORIZATION_SIZES = (500, 2_000, 10_000)
MEMORIZATION_ETAS = (0.0, 0.025, 0.05, 0.1)
HELD_OUT = "dataset:test:balanced[5000:10000]"
EMBEDDED_SUBSET_LIMIT = 5_000  # the first half of the embedded split's balanced order; the second is held out
# Every 5,000-step checkpoint at guidance 1 and 2 (does it copy, and when), the last one along the whole trade-off
# as well (docs/reproduction.md: a setting that weakens the conditioning looks better at a fixed scale). The steps
# (configs/fmnist.py:memorize saves every 5,000 of its 20,000) are named, so that a checkpoint saved on a preemption
# notice is not scored for one seed alone.
MEMORIZATION_CHECKPOINTS = ",".join(str(step) for step in range(5_000, 20_001, 5_000))
MEMORIZATION_REPORT = (f"--reference={HELD_OUT}", f"--checkpoints={MEMORIZATION_CHECKPOINTS}", "--cfg_scale=1,2",
                       "--latest_cfg_scale=1.25,1.5,1.75", "--num_samples=500", "--sampler=dpm", "--steps=25",
                       "--features=classifier")


def subsets(sizes: Iterable[int]) -> Axis:
    """Training sets of N class-balanced images, nested (each smaller one inside the larger). Up to
    ``EMBEDDED_SUBSET_LIMIT`` come from the test split (the embedded 10k), whose images past that
    position are the held-out reference; larger N come from the 60k training split, which must be
    installed: their setting names its Debian folder, so that a machine without it refuses the run
    instead of serving the test split in its place and training on held-out images."""
    from diffcorrupt.data.sources.fashion_mnist import DEBIAN_DIR

    axis = []
    for size in sizes:
        overrides = {"data.subset": f"balanced[0:{size}]"}
        if size > EMBEDDED_SUBSET_LIMIT:
            overrides.update({"data.split": "train", "data.data_dir": str(DEBIAN_DIR)})
        axis.append(setting(f"n{size}", overrides))
    return tuple(axis)


MEMORIZATION = Grid(
    "fmnist_memorization", "configs/fmnist.py:memorize",
    (subsets(MEMORIZATION_SIZES), etas(MEMORIZATION_ETAS) + (cep("uniform"), cep("gaussian"))),
    seeds=SMALL_SEEDS, report=MEMORIZATION_REPORT, rows="docs/results/fmnist_memorization/*.csv",
    doc="The memorization regime (docs/reproduction.md): pixel DiT-T/4 at 16x16, 20,000 steps, on N = 500, 2,000, 10,000 "
        "class-balanced images (the last needs the 60k training split installed), clean, eta 2.5, 5, 10% and clean "
        "with CEP-U and CEP-G, 3 seeds, every checkpoint scored against the held-out "
        f"{HELD_OUT.partition(':')[2]} (FD, precision/recall, accuracy) and against its own training set "
        "(copies in pixel space, feature-space memorization). Pick a row with --only=n500_.",
)
# The small-scale twin of the paper's LCM row (issue 19, docs/lcm.md): the demo's latent runs, clean and
# eta = 5%, and a consistency-distilled student of each, every one sampled at the same step counts, the
# teachers with DPM-Solver++ and the students with the multistep consistency sampler.
LCM_ETAS = (0.0, 0.05)
LCM_REPORT = ("--cfg_scale=2,3", "--num_samples=1000", "--steps=1,2,4,8,25", "--features=classifier")
FMNIST_LATENT = Grid(
    "fmnist_latent", "configs/fmnist.py:latent", (etas(LCM_ETAS),), seeds=SMALL_SEEDS, report=LCM_REPORT,
    doc="The demo's latent DiT-T/2 at the latent preset, clean and eta 5% (symmetric), 3 seeds: the teachers of "
        "fmnist_lcm. Needs the latents of configs/fmnist.py's `latent` preset.")
FMNIST_LCM = Grid(
    "fmnist_lcm", "configs/fmnist.py:lcm",
    (tuple(setting(f"lcm-{s.label}", {**dict(s.overrides), "distill.teacher": f"runs/fmnist_latent/{s.label}_seed{{seed}}"})
           for s in etas(LCM_ETAS)),),
    seeds=SMALL_SEEDS, report=LCM_REPORT,
    doc="Latent consistency distillation of each fmnist_latent run (its own seed's, from runs/fmnist_latent: sweep that "
        "grid first) on the data it was trained on: docs/lcm.md compares them at 1, 2, 4, 8 and 25 steps.")
# The small-scale twin of the paper's personalization (issue 18, docs/personalization.md): a ControlNet on
# Canny edges beside each fmnist_latent run, trained on the first half of the embedded split's balanced
# order and sampled with the controls (and labels) of the second half, which it never saw.
CONTROL_HELD_OUT = "dataset:test:balanced[5000:10000]"
CONTROL_REPORT = (f"--controls={CONTROL_HELD_OUT}", f"--reference={CONTROL_HELD_OUT}", "--cfg_scale=1,2,3",
                  "--num_samples=1000", "--sampler=dpm", "--steps=25", "--features=classifier")
FMNIST_CONTROL = Grid(
    "fmnist_control", "configs/fmnist.py:control",
    (tuple(setting(f"controlnet-{s.label}", {"personalize.base": f"runs/fmnist_latent/{s.label}_seed{{seed}}"})
           for s in etas(LCM_ETAS)),),
    seeds=SMALL_SEEDS, report=CONTROL_REPORT, rows="docs/results/fmnist_control/*.csv",
    doc="ControlNet personalization on Canny edges of each fmnist_latent run (its own seed's, from runs/fmnist_latent: "
        "sweep that grid first), clean personalization data: docs/personalization.md compares the clean and the "
        "5%-corrupted bases by FD, precision/recall, accuracy and edge F1 on held-out controls.")
# The paper's personalization (section 3.5) for pods: a control branch on ImageNet-100's Canny edges beside
# each clean, symmetric-eta, CEP-U and CEP-G run of a pre-training grid (configs/imagenet.py:controlnet_ldm4).
IN100_HELD_OUT = "dataset:validation:classes:classes/imagenet100.json"
IN100_REPORT = (f"--controls={IN100_HELD_OUT}", f"--reference={IN100_HELD_OUT}", "--num_samples=5000",
                "--sampler=dpm", "--steps=50")


def _personalization(name: str, preset: str, pretraining: str, method: str) -> Grid:
    bases = (tuple((pretraining, s) for s in etas(ETAS))
             + tuple((f"{pretraining}_baselines", s) for s in (cep("uniform"), cep("gaussian"))))
    return Grid(name, f"configs/imagenet.py:{preset}",
                (tuple(setting(f"{method}-{s.label}", {"personalize.base": f"runs/{grid}/{s.label}_seed0"})
                       for grid, s in bases),),
                report=IN100_REPORT,
                doc=f"A {method} on ImageNet-100's Canny edges beside each clean, symmetric-eta, CEP-U and CEP-G run of "
                    f"{pretraining} (sweep those first), clean data, 10 epochs, scored on the 5,000 validation images' "
                    "controls. Paper: the slightly corrupted and CEP bases personalize better (FID lower by up to ~7.6).")


IN100 = (_personalization("imagenet100_ldm4_controlnet", "controlnet_ldm4", "imagenet_ldm4", "controlnet"),
         _personalization("imagenet100_ldm4_t2i", "t2i_ldm4", "imagenet_ldm4", "t2i-adapter"),
         _personalization("imagenet100_dit_controlnet", "controlnet_dit", "imagenet_dit", "controlnet"))
GRIDS: dict[str, Grid] = {grid.name: grid for grid in (*_PAPER, *_SMALL, REPRO_SMALL, MEMORIZATION, FMNIST_LATENT,
                                                       FMNIST_LCM, FMNIST_CONTROL, *IN100)}


def get_grid(spec: str) -> Grid:
    """A grid by name, or the ``GRID`` defined by a Python file (``my_grid.py``)."""
    if spec.endswith(".py"):
        return _grid_from_file(pathlib.Path(spec))
    if spec not in GRIDS:
        raise UserError(f"unknown grid '{spec}'{suggest(spec, GRIDS)}; choose one of {', '.join(GRIDS)} "
                        "or pass a .py file that defines GRID")
    return GRIDS[spec]


def _grid_from_file(path: pathlib.Path) -> Grid:
    if not path.is_file():
        raise UserError(f"grid file '{path}' does not exist; pass a grid name or a .py file that defines GRID")
    spec = importlib.util.spec_from_file_location(f"diffcorrupt_grid_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    grid = getattr(module, "GRID", None)
    if not isinstance(grid, Grid):
        raise UserError(f"grid file '{path}' defines no GRID of type diffcorrupt.sweeps.grids.Grid; add one")
    return grid
