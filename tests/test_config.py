"""Config loading, overrides, validation, and the `diffcorrupt corruption` command end to end."""

import json
import math
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from diffcorrupt.config.loading import apply_override, config_hash, flat_keys, load_config
from diffcorrupt.config.schema import base_config
from diffcorrupt.config.validate import validate
from diffcorrupt.errors import ConfigError, DataError, UserError
from diffcorrupt.parallel.mesh import data_parallel_size, mesh_shape

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

PRESETS = [
    "fmnist.py",
    "fmnist.py:default",
    "fmnist.py:tiny",
    "shapes.py",
    "shapes.py:default",
    "shapes.py:tiny",
    "shapes.py:text_demo",
    "imagenet.py",
    "imagenet.py:default",
]
LOCAL_PRESETS = [p for p in PRESETS if not p.startswith("imagenet")]
REQUIRED_KEYS = [
    "seed",
    "data.name",
    "data.corruption.kind",
    "data.corruption.ratio",
    "data.corruption.mode",
    "data.corruption.seed",
    "model.name",
    "model.cep.kind",
    "model.cep.gamma",
    "train.num_steps",
    "train.batch_size",
    "train.lr",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "mesh.data",
    "mesh.fsdp",
    "mesh.tensor",
]


def load(spec, *overrides):
    return load_config(str(CONFIGS / spec), list(overrides))


def assert_one_sentence(err, *fragments):
    """The message is one line, with no traceback text, and names what it is about."""
    message = str(err.value if hasattr(err, "value") else err)
    assert message.strip(), "empty message"
    assert "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message and 'File "' not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def write_config(tmp_path, body, name="custom.py"):
    path = tmp_path / name
    path.write_text("from diffcorrupt.config.schema import base_config\n\n\ndef get_config(arg=None):\n"
                    "    config = base_config()\n" + body + "    return config\n")
    return str(path)


# ---------------------------------------------------------------- presets load and validate


@pytest.mark.parametrize("spec", PRESETS)
def test_presets_load_with_all_required_keys(spec):
    config = load(spec)
    assert isinstance(config, ml_collections.ConfigDict)
    keys = flat_keys(config)
    for key in REQUIRED_KEYS:
        assert key in keys, key
    # presets change values, never add or remove keys
    assert set(keys) == set(flat_keys(base_config()))
    assert config.data.corruption.ratio == 0.0
    validate(config, check_data=False)


@pytest.mark.parametrize("spec", LOCAL_PRESETS)
def test_local_presets_validate_with_data(spec):
    config = load(spec)
    validate(config)
    validate(config, num_devices=8)
    validate(config, num_devices=1)


def test_preset_values():
    assert load("fmnist.py").data.name == "fashion_mnist"
    assert load("fmnist.py:tiny").train.batch_size == 16
    shapes = load("shapes.py")
    assert shapes.data.name == "captioned_shapes" and shapes.data.corruption.kind == "swap"
    assert load("shapes.py:tiny").data.num_examples == 2000
    assert load("imagenet.py").data.name == "tfds:imagenet2012"


def test_load_config_returns_a_fresh_config_each_time():
    a = load("fmnist.py")
    a.train.batch_size = 1
    assert load("fmnist.py").train.batch_size == 128


def test_overrides_apply_with_the_key_type():
    config = load(
        "fmnist.py:tiny",
        "data.corruption.ratio=0.075",
        "data.corruption.seed=3",
        "data.corruption.mode=random",
        "data.shuffle=false",
        "train.lr=1",
        "mesh.data=2",
    )
    assert config.data.corruption.ratio == 0.075
    assert config.data.corruption.seed == 3 and type(config.data.corruption.seed) is int
    assert config.data.corruption.mode == "random"
    assert config.data.shuffle is False
    assert config.train.lr == 1.0 and type(config.train.lr) is float
    assert config.mesh.data == 2
    validate(config)


def test_ratio_zero_is_accepted_and_hash_tracks_values():
    config = load("fmnist.py", "data.corruption.ratio=0.0")
    validate(config)
    assert config_hash(config) == config_hash(load("fmnist.py"))
    assert config_hash(config) != config_hash(load("fmnist.py", "data.corruption.ratio=0.1"))


def test_hash_outlives_schema_keys_added_at_their_default():
    """A config saved before a key joined the schema reads back with that key at its default; the
    samples made from it before and after must keep one hash, and a changed value must still count."""
    config = load("fmnist.py:latent")
    older = ml_collections.ConfigDict(config.to_dict())
    del older.diffusion["input_perturbation"]  # a key at its default, as if the schema lacked it
    assert config_hash(older) == config_hash(config)
    config.diffusion.input_perturbation = 0.1
    assert config_hash(older) != config_hash(config)


# ---------------------------------------------------------------- unknown keys and types


def test_unknown_override_key():
    with pytest.raises(ConfigError) as err:
        load("fmnist.py", "train.warmup=10")
    assert_one_sentence(err, "train.warmup")
    with pytest.raises(ConfigError) as err:
        load("fmnist.py", "nonsense.key=1")
    assert_one_sentence(err, "nonsense.key")


def test_misspelt_override_gets_a_suggestion():
    with pytest.raises(ConfigError) as err:
        load("fmnist.py", "train.batch_sise=8")
    assert_one_sentence(err, "train.batch_sise", "did you mean 'train.batch_size'")
    with pytest.raises(ConfigError) as err:
        load("fmnist.py", "data.corruption.ration=0.1")
    assert_one_sentence(err, "did you mean 'data.corruption.ratio'")


def test_override_without_value_and_override_of_a_group():
    with pytest.raises(ConfigError) as err:
        load("fmnist.py", "train.batch_size")
    assert_one_sentence(err, "train.batch_size")
    with pytest.raises(ConfigError) as err:
        load("fmnist.py", "data.corruption=1")
    assert_one_sentence(err, "data.corruption")


def test_preset_adding_an_extra_key(tmp_path):
    spec = write_config(tmp_path, "    config.train.warmup_epochs = 10\n")
    config = load_config(spec)
    with pytest.raises(ConfigError) as err:
        validate(config, check_data=False)
    assert_one_sentence(err, "train.warmup_epochs")


def test_preset_with_misspelt_key_gets_a_suggestion(tmp_path):
    spec = write_config(tmp_path, "    config.train.batch_sise = 8\n")
    with pytest.raises(ConfigError) as err:
        validate(load_config(spec), check_data=False)
    assert_one_sentence(err, "train.batch_sise", "did you mean 'train.batch_size'")


def test_preset_missing_a_key(tmp_path):
    spec = write_config(tmp_path, "    del config.checkpoint['keep']\n")
    with pytest.raises(ConfigError) as err:
        validate(load_config(spec), check_data=False)
    assert_one_sentence(err, "checkpoint.keep")


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.batch_size=abc", "train.batch_size"),
        ("train.batch_size=1.5", "train.batch_size"),
        ("data.corruption.ratio=abc", "data.corruption.ratio"),
        ("data.shuffle=maybe", "data.shuffle"),
        ("seed=", "seed"),
    ],
)
def test_bad_override_type(override, key):
    with pytest.raises(ConfigError) as err:
        load("fmnist.py", override)
    assert_one_sentence(err, key)


def test_wrong_type_set_on_the_config_dict():
    config = load("fmnist.py")
    # ConfigDict itself refuses a str on a float field ...
    with pytest.raises(TypeError):
        config.train.lr = "fast"
    # ... but a config built around that (ignore_type, or a plain dict) must still be refused.
    with config.train.ignore_type():
        config.train.lr = "fast"
    with pytest.raises(ConfigError) as err:
        validate(config, check_data=False)
    assert_one_sentence(err, "train.lr", "float")

    as_dict = load("fmnist.py").to_dict()
    as_dict["data"]["corruption"]["ratio"] = "0.1"
    with pytest.raises(ConfigError) as err:
        validate(ml_collections.ConfigDict(as_dict), check_data=False)
    assert_one_sentence(err, "data.corruption.ratio")

    as_dict = load("fmnist.py").to_dict()
    as_dict["train"]["batch_size"] = 16.0
    with pytest.raises(ConfigError) as err:
        validate(ml_collections.ConfigDict(as_dict), check_data=False)
    assert_one_sentence(err, "train.batch_size")


def test_int_on_float_field_is_accepted():
    as_dict = load("fmnist.py").to_dict()
    as_dict["train"]["lr"] = 1
    validate(ml_collections.ConfigDict(as_dict), check_data=False)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("ratio", ["1.0", "1", "-0.1", "1.5", "nan", "inf"])
def test_bad_ratio_rejected(ratio):
    config = load("fmnist.py", f"data.corruption.ratio={ratio}")
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert_one_sentence(err, "data.corruption.ratio")


@pytest.mark.parametrize("ratio", ["0.0", "0", "0.025", "0.075", "0.999"])
def test_good_ratio_accepted(ratio):
    validate(load("fmnist.py", f"data.corruption.ratio={ratio}"))


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.corruption.kind=symetric", "data.corruption.kind"),
        ("data.corruption.mode=sometimes", "data.corruption.mode"),
        ("data.corruption.prior=flat", "data.corruption.prior"),
        ("model.cep.kind=laplace", "model.cep.kind"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.num_steps=-5", "train.num_steps"),
        ("checkpoint.keep=0", "checkpoint.keep"),
        ("data.channels=2", "data.channels"),
        ("data.corruption.seed=-1", "data.corruption.seed"),
        ("model.cep.gamma=-1", "model.cep.gamma"),
    ],
)
def test_bad_values_rejected(override, key):
    with pytest.raises(ConfigError) as err:
        validate(load("fmnist.py", override))
    assert_one_sentence(err, key)


def test_misspelt_choice_gets_a_suggestion():
    with pytest.raises(ConfigError) as err:
        validate(load("fmnist.py", "data.corruption.kind=symetric"))
    assert_one_sentence(err, "did you mean 'symmetric'")


# ---------------------------------------------------------------- batch and mesh


def test_batch_divisible_by_data_parallel_size():
    config = load("fmnist.py", "train.batch_size=12", "mesh.data=-1")
    with pytest.raises(ConfigError) as err:
        validate(config, num_devices=8)
    assert_one_sentence(err, "train.batch_size", "12", "8")
    validate(config, num_devices=4)  # 12 splits 4 ways
    validate(load("fmnist.py", "train.batch_size=16", "mesh.data=-1"), num_devices=8)


def test_batch_with_fsdp_axis():
    config = load("fmnist.py", "train.batch_size=12", "mesh.fsdp=2", "mesh.data=-1")
    assert mesh_shape(config.mesh, 8) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert data_parallel_size(config.mesh, 8) == 8
    with pytest.raises(ConfigError) as err:
        validate(config, num_devices=8)
    assert_one_sentence(err, "train.batch_size")
    validate(load("fmnist.py", "train.batch_size=16", "mesh.fsdp=2", "mesh.data=-1"), num_devices=8)


def test_tensor_axis_shares_the_batch():
    config = load("fmnist.py", "train.batch_size=12", "mesh.tensor=2", "mesh.data=-1")
    assert data_parallel_size(config.mesh, 8) == 4
    validate(config, num_devices=8)


def test_batch_divisible_by_process_count():
    config = load("fmnist.py", "train.batch_size=16")
    with pytest.raises(ConfigError) as err:
        validate(config, num_devices=8, process_count=3)
    assert_one_sentence(err, "train.batch_size")
    validate(config, num_devices=8, process_count=2)


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (("mesh.data=-1", "mesh.fsdp=-1"), "mesh.fsdp"),  # two -1 axes
        (("mesh.data=-1", "mesh.tensor=-1"), "mesh.tensor"),
        (("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=1"), "mesh.data"),  # 4 != 8 devices
        (("mesh.data=16",), "mesh.data"),
        (("mesh.data=-1", "mesh.fsdp=3"), "mesh.fsdp"),  # 3 does not divide 8
        (("mesh.data=0",), "mesh.data"),
        (("mesh.data=-1", "mesh.tensor=-2"), "mesh.tensor"),
    ],
)
def test_bad_mesh(overrides, fragment):
    config = load("fmnist.py", "train.batch_size=16", *overrides)
    with pytest.raises(ConfigError) as err:
        validate(config, num_devices=8)
    assert_one_sentence(err, fragment)


def test_mesh_shapes():
    config = load("fmnist.py")
    assert mesh_shape(config.mesh, 8) == {"data": 8, "fsdp": 1, "tensor": 1}
    config = load("fmnist.py", "mesh.data=2", "mesh.fsdp=-1", "mesh.tensor=2")
    assert mesh_shape(config.mesh, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    config = load("fmnist.py", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    assert mesh_shape(config.mesh, 8) == {"data": 2, "fsdp": 2, "tensor": 2}


# ---------------------------------------------------------------- data availability and fit


def test_missing_fashion_mnist_points_at_the_package(tmp_path):
    config = load("fmnist.py", f"data.data_dir={tmp_path}")
    with pytest.raises(DataError) as err:
        validate(config)
    assert_one_sentence(err, "apt-get install dataset-fashion-mnist", "data.data_dir", str(tmp_path))


def test_missing_latent_records(tmp_path):
    config = load("fmnist.py", "data.name=latent_records", f"data.data_dir={tmp_path}")
    with pytest.raises(DataError) as err:
        validate(config)
    assert_one_sentence(err, "data.data_dir", "meta.json")


def test_missing_image_folder(tmp_path):
    missing = tmp_path / "does-not-exist"
    config = load("fmnist.py", "data.name=image_folder", f"data.data_dir={missing}")
    with pytest.raises(DataError) as err:
        validate(config)
    assert_one_sentence(err, "data.data_dir", str(missing))
    # an empty data_dir is refused too
    with pytest.raises(DataError) as err:
        validate(load("fmnist.py", "data.name=image_folder"))
    assert_one_sentence(err, "data.data_dir")


def test_empty_image_folder(tmp_path):
    config = load("fmnist.py", "data.name=image_folder", f"data.data_dir={tmp_path}")
    with pytest.raises(DataError) as err:
        validate(config)
    assert_one_sentence(err, str(tmp_path))


@pytest.mark.parametrize("spec", ["fmnist.py", "fmnist.py:tiny"])
def test_fixed_size_dataset_rejects_num_examples(spec):
    with pytest.raises(ConfigError) as err:
        validate(load(spec, "data.num_examples=100"))
    assert_one_sentence(err, "data.num_examples")


def test_generated_dataset_needs_a_size():
    config = load("shapes.py", "data.num_examples=0")
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert_one_sentence(err, "data.num_examples")


@pytest.mark.parametrize(
    "spec,kind",
    [("fmnist.py", "swap"), ("shapes.py", "symmetric"), ("shapes.py", "asymmetric"), ("shapes.py:tiny", "symmetric")],
)
def test_corruption_kind_must_fit_the_dataset(spec, kind):
    config = load(spec, f"data.corruption.kind={kind}", "data.corruption.ratio=0.1")
    with pytest.raises(ConfigError) as err:
        validate(config)
    assert_one_sentence(err, "data.corruption.kind", kind)


def test_unknown_dataset_name():
    with pytest.raises(ConfigError) as err:
        validate(load("fmnist.py", "data.name=fashion_mnst"))
    assert_one_sentence(err, "data.name", "fashion_mnst", "did you mean 'fashion_mnist'")
    with pytest.raises(ConfigError) as err:
        validate(load("fmnist.py", "data.name=cifar"))
    assert_one_sentence(err, "data.name", "cifar")


def test_imagenet_validates_without_data_check():
    config = load("imagenet.py", "data.corruption.ratio=0.025")
    validate(config, check_data=False)
    validate(config, num_devices=8, check_data=False)


# ---------------------------------------------------------------- config files and presets


def test_unknown_preset():
    with pytest.raises(ConfigError) as err:
        load("fmnist.py:tinyy")
    assert_one_sentence(err, "tinyy", "did you mean 'tiny'")
    with pytest.raises(ConfigError) as err:
        load("imagenet.py:huge")
    assert_one_sentence(err, "huge")


def test_the_sd15_lcm_preset_is_refused_until_its_text_encoder_exists():
    with pytest.raises(ConfigError) as err:
        load("cc3m.py:lcm_sd15")
    assert_one_sentence(err, "CLIP ViT-L/14", "configs/fmnist.py:lcm")


def test_the_lcm_preset_validates_as_a_distillation():
    config = load("fmnist.py:lcm")
    validate(config, check_data=False)
    assert (config.distill.teacher, config.sample.sampler, config.model.guidance_dim) == ("runs/fmnist-latent", "lcm", 256)


def test_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.py")
    with pytest.raises(ConfigError) as err:
        load_config(missing)
    assert_one_sentence(err, missing)
    with pytest.raises(ConfigError) as err:
        load_config(missing + ":tiny")
    assert_one_sentence(err, missing)


def test_config_file_without_get_config(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert_one_sentence(err, "get_config")


def test_errors_are_user_errors():
    assert issubclass(ConfigError, UserError) and issubclass(DataError, UserError)


def test_apply_override_on_base_config():
    config = base_config()
    apply_override(config, "data.corruption.groups=0,1;2,3")
    assert config.data.corruption.groups == "0,1;2,3"
    apply_override(config, "data.data_dir=/a=b")  # only the first '=' separates key and value
    assert config.data.data_dir == "/a=b"


# ---------------------------------------------------------------- the CLI, end to end


def run_cli(*args):
    return subprocess.run(
        [PYTHON, "-m", "diffcorrupt", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_corruption_manifest(tmp_path):
    out = tmp_path / "manifest"
    args = ["corruption", "--config=configs/fmnist.py", "--config.data.corruption.ratio=0.075", f"--out={out}"]
    result = run_cli(*args, "--save_indices")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    summary = json.loads(lines[0])
    assert isinstance(summary, dict)
    n = summary["num_examples"]
    assert n in (60_000, 10_000)  # the Debian package, or the embedded fallback
    assert summary["target_ratio"] == 0.075
    assert summary["num_corrupted"] == math.floor(0.075 * n)
    assert summary["actual_ratio"] == pytest.approx(summary["num_corrupted"] / n)
    assert summary["kind"] == "symmetric"
    assert summary["seed"] == 0
    matrix = np.asarray(summary["flip_matrix"])
    assert matrix.shape == (10, 10)
    assert np.all(np.diag(matrix) == 0)
    assert matrix.sum() == summary["num_corrupted"]
    assert np.all(matrix >= 0)

    manifest_path = out / "corruption.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["summary"]["num_corrupted"] == summary["num_corrupted"]
    assert manifest["summary"]["flip_matrix"] == summary["flip_matrix"]
    assert manifest["config"]["data"]["corruption"]["ratio"] == 0.075
    indices = np.load(out / "corrupted_indices.npy")
    assert len(indices) == summary["num_corrupted"]
    assert np.all(np.diff(indices) > 0)  # sorted and unique
    assert indices.min() >= 0 and indices.max() < n
    original_manifest = manifest_path.read_bytes()
    original_indices = (out / "corrupted_indices.npy").read_bytes()

    # the same config into the same folder: fine, same answer
    again = run_cli(*args, "--save_indices")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == summary
    assert np.array_equal(np.load(out / "corrupted_indices.npy"), indices)

    # another config into the same folder: refused, nothing replaced
    other = run_cli(
        "corruption", "--config=configs/fmnist.py", "--config.data.corruption.ratio=0.1", f"--out={out}", "--save_indices"
    )
    assert other.returncode == 2
    assert other.stdout == ""
    err_lines = other.stderr.strip().splitlines()
    assert len(err_lines) == 1, other.stderr
    assert "error:" in err_lines[0] and "corruption.json" in err_lines[0]
    assert "Traceback" not in other.stderr
    assert manifest_path.read_bytes() == original_manifest
    assert (out / "corrupted_indices.npy").read_bytes() == original_indices


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--config.train.batch_sise=8"], "did you mean 'train.batch_size'"),
        (["--config.data.corruption.ratio=abc"], "data.corruption.ratio"),
        (["--config.data.corruption.ratio=1.0"], "data.corruption.ratio"),
    ],
)
def test_cli_bad_override_exits_2_with_one_error_line(args, fragment):
    result = run_cli("corruption", "--config=configs/fmnist.py", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error:" in lines[0] and fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_missing_config_file():
    result = run_cli("corruption", "--config=configs/nope.py")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "configs/nope.py" in lines[0]


def test_cli_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    result = run_cli("corruption", "--config=configs/fmnist.py:tiny", f"--out={target}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "is a file" in lines[0]
    assert target.read_text() == "keep me"


def test_cli_random_mode_manifest_is_keyed_by_epoch(tmp_path):
    args = ["corruption", "--config=configs/shapes.py:tiny", "--config.data.corruption.ratio=0.1",
            "--config.data.corruption.mode=random", f"--out={tmp_path}"]
    first = run_cli(*args, "--epoch=0")
    assert first.returncode == 0, first.stderr
    written = (tmp_path / "corruption.json").read_bytes()
    other_epoch = run_cli(*args, "--epoch=1")
    assert other_epoch.returncode == 2
    assert "epoch" in other_epoch.stderr.strip().splitlines()[-1]
    assert (tmp_path / "corruption.json").read_bytes() == written
    assert json.loads(written)["summary"]["epoch"] == 0
