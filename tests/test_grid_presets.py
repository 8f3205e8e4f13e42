"""The paper's grid as presets and sweep grids: every preset and every run of every grid loads and
validates, the presets carry the paper's recipes, and the grids the paper's values."""

import pathlib

import pytest

from diffcorrupt.config.loading import flat_keys, load_config
from diffcorrupt.config.schema import base_config
from diffcorrupt.config.validate import validate
from diffcorrupt.sweeps import grids
from diffcorrupt.sweeps.expand import check_runs, expand

REPO = pathlib.Path(__file__).resolve().parent.parent
PRESETS = ["imagenet.py", "imagenet.py:ldm4", "imagenet.py:dit_xl2", "cc3m.py", "cc3m.py:default", "fmnist.py:small",
           "fmnist.py:memorize", "fmnist.py:control", "imagenet.py:controlnet_ldm4", "imagenet.py:t2i_ldm4",
           "imagenet.py:controlnet_dit",
           "shapes.py:small"]
SCHEMA_KEYS = set(flat_keys(base_config()))


def load(spec, *overrides):
    return load_config(str(REPO / "configs" / spec), list(overrides))


@pytest.mark.parametrize("spec", PRESETS)
def test_presets_load_and_validate(spec):
    config = load(spec)
    assert set(flat_keys(config)) == SCHEMA_KEYS  # presets set values, never add keys
    assert config.data.corruption.ratio == 0.0
    validate(config, check_data=False)
    validate(config, num_devices=8, check_data=False)


@pytest.mark.parametrize("spec", ["imagenet.py:ldm4", "imagenet.py:dit_xl2"])
@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_imagenet_presets_take_eta_and_kind_as_overrides(spec, kind):
    config = load(spec, "data.corruption.ratio=0.075", f"data.corruption.kind={kind}")
    validate(config, check_data=False)
    assert (config.data.corruption.ratio, config.data.corruption.kind) == (0.075, kind)
    assert config.data.corruption.groups == "groups/imagenet_cifar100.json"  # read by asymmetric runs only


def test_presets_carry_the_papers_recipes():
    ldm4 = load("imagenet.py:ldm4")
    assert (ldm4.model.name, ldm4.data.name, ldm4.data.data_dir) == ("LDM-cin256-v2", "latent_records",
                                                                     "latents/imagenet256-vq-f4")
    assert (ldm4.train.batch_size, ldm4.train.lr, ldm4.train.num_steps) == (512, 1e-4, 178_000)
    assert (ldm4.diffusion.schedule, ldm4.diffusion.loss, ldm4.sample.cfg_scale) == ("ldm_linear", "mse", 2.0)
    dit = load("imagenet.py:dit_xl2")
    assert (dit.model.name, dit.data.data_dir) == ("DiT-XL/2", "latents/imagenet256-kl-f8")
    assert (dit.train.batch_size, dit.train.lr, dit.train.num_steps) == (256, 1e-4, 400_000)
    assert (dit.diffusion.loss, dit.model.learned_sigma, dit.sample.cfg_scale) == ("hybrid", True, 1.75)
    cc3m = load("cc3m.py")
    assert (cc3m.model.name, cc3m.data.corruption.kind, cc3m.data.data_dir) == ("LDM-txt256", "swap",
                                                                                 "latents/cc3m256-vq-f4")
    assert (cc3m.train.batch_size, cc3m.train.lr, cc3m.train.num_steps, cc3m.sample.cfg_scale) == (512, 1e-4, 396_000, 3.0)
    assert load("imagenet.py").data.name == "tfds:imagenet2012"  # the pixel default is unchanged


@pytest.mark.parametrize("spec, reference", [("fmnist.py:default", {"model.name": "DiT-S/4", "train.batch_size": 128}),
                                             ("fmnist.py:tiny", {"train.batch_size": 16, "train.num_steps": 20}),
                                             ("shapes.py:text_demo", {"data.image_size": 16, "train.num_steps": 1500})])
def test_existing_presets_keep_their_values(spec, reference):
    values = flat_keys(load(spec))
    assert {key: values[key] for key in reference} == reference


def test_small_twins_are_the_local_datasets_with_the_same_steps_each():
    fmnist, shapes = load("fmnist.py:small"), load("shapes.py:small")
    assert (fmnist.data.name, fmnist.model.name, fmnist.train.num_steps) == ("fashion_mnist", "DiT-T/4", 4_000)
    assert (shapes.data.name, shapes.data.corruption.kind, shapes.train.num_steps) == ("captioned_shapes", "swap", 3_000)
    validate(fmnist)  # the embedded data is there
    validate(shapes)


def test_paper_values():
    assert grids.ETAS == (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2)
    assert grids.CC3M_ETAS == grids.ETAS + (0.3,)
    assert grids.GAMMAS == (0.1, 0.5, 1.0, 5.0, 10.0)
    assert grids.SMALL_ETAS == (0.0, 0.025, 0.05, 0.1, 0.2) and grids.SMALL_SEEDS == (0, 1, 2)


EXPECTED_COUNTS = {
    "imagenet_ldm4": 13, "imagenet_dit": 13,  # clean + 6 etas x (symmetric, asymmetric)
    "cc3m": 8,  # clean + 7 swap ratios, 30% included
    "imagenet_ldm4_baselines": 6, "imagenet_dit_baselines": 4, "cc3m_baselines": 4,
    "imagenet_ldm4_cep_gamma": 10, "imagenet_ldm4_fixed_random": 3,
    "fmnist_small": 13, "fmnist_small_baselines": 6, "fmnist_small_cep_gamma": 10, "fmnist_small_fixed_random": 3,
    "shapes_small": 8, "shapes_small_baselines": 4,
    "repro_small": 21,  # (5 etas + CEP-U + CEP-G) x 3 seeds
    "fmnist_memorization": 54,  # 3 sizes x (4 etas + CEP-U + CEP-G) x 3 seeds
    "fmnist_latent": 6, "fmnist_lcm": 6,  # (clean, 5% symmetric) x 3 seeds: teachers and their students
    "fmnist_control": 6,  # a ControlNet beside each fmnist_latent run
    # a branch beside the clean, 6 symmetric-eta, CEP-U and CEP-G pre-training runs
    "imagenet100_ldm4_controlnet": 9, "imagenet100_ldm4_t2i": 9, "imagenet100_dit_controlnet": 9,
}


def test_personalization_presets_carry_diffusers_controlnet_recipe():
    for preset, method, base in (("controlnet_ldm4", "controlnet", "runs/imagenet_ldm4/eta0_seed0"),
                                 ("t2i_ldm4", "t2i-adapter", "runs/imagenet_ldm4/eta0_seed0"),
                                 ("controlnet_dit", "controlnet", "runs/imagenet_dit/eta0_seed0")):
        config = load(f"imagenet.py:{preset}")
        assert (config.personalize.method, config.personalize.base, config.data.control) == (method, base, "canny")
        assert config.data.subset == "classes:classes/imagenet100.json" and config.model.label_drop == 0
        assert (config.train.lr, config.train.warmup_steps, config.train.batch_size, config.train.num_steps,
                config.train.weight_decay, config.train.grad_clip) == (5e-6, 500, 32, 39_590, 1e-2, 1.0)
    assert load("imagenet.py:controlnet_dit").personalize.copies == 13


def test_every_grid_is_listed():
    assert set(grids.GRIDS) == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_every_grid_expands_to_valid_uniquely_named_runs(name, monkeypatch):
    monkeypatch.chdir(REPO)  # grid configs are relative to the repository root
    grid = grids.GRIDS[name]
    runs = expand(grid, pathlib.Path("runs") / name)
    assert len(runs) == EXPECTED_COUNTS[name]
    assert len({run.name for run in runs}) == len(runs)
    assert all(run.workdir == pathlib.Path("runs", name, run.name) for run in runs)
    configs = check_runs(grid, runs)
    assert [config.seed for config in configs.values()] == [int(run.name.rsplit("seed", 1)[1]) for run in runs]


@pytest.mark.parametrize("name, kinds", [("imagenet_ldm4", {"symmetric", "asymmetric"}),
                                         ("imagenet_dit", {"symmetric", "asymmetric"}), ("cc3m", {"swap"})])
def test_eta_grids_hold_the_papers_ratios_and_kinds(name, kinds, monkeypatch):
    monkeypatch.chdir(REPO)
    grid = grids.GRIDS[name]
    configs = check_runs(grid, expand(grid, pathlib.Path("runs")))
    corrupted = {(c.data.corruption.kind, c.data.corruption.ratio) for c in configs.values() if c.data.corruption.ratio}
    ratios = grids.CC3M_ETAS if name == "cc3m" else grids.ETAS
    assert corrupted == {(kind, ratio) for kind in kinds for ratio in ratios if ratio}
    assert sum(c.data.corruption.ratio == 0 for c in configs.values()) == 1  # one clean run, not one per kind


def test_ablation_grids_hold_the_papers_settings(monkeypatch):
    monkeypatch.chdir(REPO)

    def configs(name):
        grid = grids.GRIDS[name]
        return list(check_runs(grid, expand(grid, pathlib.Path("runs"))).values())

    assert {(c.model.cep.kind, c.model.cep.gamma) for c in configs("imagenet_ldm4_cep_gamma")} == {
        (kind, gamma) for kind in ("uniform", "gaussian") for gamma in grids.GAMMAS}
    table7 = configs("imagenet_ldm4_fixed_random")
    assert {(c.model.cep.kind, c.data.corruption.ratio, c.data.corruption.mode) for c in table7} == {
        ("uniform", 0.0, "fixed"), ("none", grids.TABLE7_ETA, "fixed"), ("none", grids.TABLE7_ETA, "random")}
    baselines = configs("imagenet_ldm4_baselines")
    assert [(c.diffusion.input_perturbation, c.model.cep.kind, c.model.condition_dropout, c.model.label_smoothing)
            for c in baselines] == [(0.0, "none", 0.0, 0.0), (0.1, "none", 0.0, 0.0), (0.0, "uniform", 0.0, 0.0),
                                    (0.0, "gaussian", 0.0, 0.0), (0.0, "none", 0.1, 0.0), (0.0, "none", 0.0, 0.1)]
    repro = configs("repro_small")
    assert {c.train.num_steps for c in repro} == {1_200}  # the same steps each
    assert {c.data.name for c in repro} == {"latent_records"}
    assert sorted({c.data.corruption.ratio for c in repro}) == list(grids.SMALL_ETAS)
    assert sorted({c.seed for c in repro}) == [0, 1, 2]


def test_the_memorization_grid_trains_on_nested_subsets_disjoint_from_its_held_out_reference(monkeypatch):
    monkeypatch.chdir(REPO)
    grid = grids.GRIDS["fmnist_memorization"]
    configs = check_runs(grid, expand(grid, pathlib.Path("runs")))
    sizes = {}
    for config in configs.values():
        sizes.setdefault(config.data.subset, set()).add((config.data.split, config.data.data_dir))
    assert sizes == {"balanced[0:500]": {("test", "")}, "balanced[0:2000]": {("test", "")},
                     "balanced[0:10000]": {("train", "/usr/share/datasets/fashion-mnist")}}
    assert f"--reference={grids.HELD_OUT}" in grid.report
    # The report names the checkpoints every run keeps for good, and no others.
    assert f"--checkpoints={grids.MEMORIZATION_CHECKPOINTS}" in grid.report
    kept = {",".join(map(str, range(c.checkpoint.keep_every, c.train.num_steps + 1, c.checkpoint.keep_every)))
            for c in configs.values()}
    assert kept == {grids.MEMORIZATION_CHECKPOINTS}
    # Every test-split subset ends before the held-out range starts.
    held_out_start = int(grids.HELD_OUT.split("[")[1].split(":")[0])
    assert all(int(subset.split(":")[1].rstrip("]")) <= held_out_start
               for subset, places in sizes.items() if ("test", "") in places)
    assert {c.data.random_flip for c in configs.values()} == {False}
