"""An autoencoder on disk: ``autoencoder.json`` (the architecture, the latent scale, where the
weights came from, the sha256 of the weights) and ``params.npz`` (one float32 array per parameter,
named by its '/'-joined Flax path).

Both files are written under a temporary name and renamed, the params first, so a folder with an
``autoencoder.json`` never points at half-written weights; loading checks the hash, then every
name and shape against the configured module, so a damaged or foreign folder fails in one sentence
before anything runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import zipfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from diffcorrupt.autoencoders.kl import AutoencoderKL
from diffcorrupt.autoencoders.presets import AutoencoderConfig
from diffcorrupt.autoencoders.vq import VQModel
from diffcorrupt.errors import UserError
from diffcorrupt.output_paths import write_atomically
from diffcorrupt.weights.hashing import file_sha256

CONFIG_FILE = "autoencoder.json"
PARAMS_FILE = "params.npz"


def make_autoencoder(config: AutoencoderConfig, dtype: Any = jnp.float32) -> nn.Module:
    """The Flax module of ``config`` (``dtype`` is the compute type; parameters stay float32)."""
    common = dict(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        mid_attention=config.mid_attention,
        dtype=dtype,
    )
    if config.kind == "vq":
        return VQModel(codebook_size=config.codebook_size, **common)
    return AutoencoderKL(**common)


@functools.lru_cache(maxsize=16)
def _traced_shapes(config: AutoencoderConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    f = config.downsampling_factor
    image = jax.ShapeDtypeStruct((1, f, f, config.in_channels), jnp.float32)
    tree = jax.eval_shape(make_autoencoder(config).init, jax.random.key(0), image)["params"]
    return tuple((name, tuple(leaf.shape)) for name, leaf in traverse_util.flatten_dict(tree, sep="/").items())


def param_shapes(config: AutoencoderConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of ``config``'s module by '/'-joined path, from a trace (nothing allocated;
    cached, since saving, loading and importing each check against it)."""
    return dict(_traced_shapes(config))


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """'/'-joined name -> float32 array, for a params tree with or without the ``params`` level."""
    tree = params.get("params", params) if isinstance(params, dict) else params
    flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
    return {name: np.asarray(value, dtype=np.float32) for name, value in flat.items()}


def unflatten_params(flat: dict[str, Any]) -> dict:
    return {"params": traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})}


@dataclasses.dataclass(frozen=True)
class LoadedAutoencoder:
    """A stored autoencoder, ready to apply; ``encode_latents`` / ``decode_latents`` include the
    latent scale, so the diffusion model only ever sees scaled latents."""

    config: AutoencoderConfig
    module: nn.Module
    params: dict
    meta: dict
    sha256: str

    def encode_latents(self, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Scaled latents of NHWC images in [-1, 1]: a posterior draw for KL (its mean without a
        key), the pre-quantisation features for VQ."""
        if self.config.kind == "vq":
            latents = self.module.apply(self.params, images, method="encode")
        elif key is None:
            latents = self.module.apply(self.params, images, method="encode")[0]
        else:
            latents = self.module.apply(self.params, images, key, method="sample")
        return latents * self.config.scale_factor

    def decode_latents(self, latents: jax.Array) -> jax.Array:
        return self.module.apply(self.params, latents / self.config.scale_factor, method="decode")



def check_params(config: AutoencoderConfig, flat: dict[str, Any], where: str) -> None:
    """Raises ``UserError`` naming the first parameter of ``config`` that ``flat`` lacks or shapes
    differently, or the first name it has that the module does not."""
    expected = param_shapes(config)
    for name, shape in expected.items():
        if name not in flat:
            raise UserError(f"{where} lacks the parameter {name} of shape {list(shape)}; convert the weights again")
        if tuple(flat[name].shape) != shape:
            raise UserError(
                f"{where} has {name} of shape {list(flat[name].shape)} where the config needs {list(shape)}; "
                "convert the weights again"
            )
    extra = sorted(set(flat) - set(expected))
    if extra:
        raise UserError(f"{where} has a parameter {extra[0]} that the configured autoencoder lacks; check its config")


def save_autoencoder(directory: str | pathlib.Path, config: AutoencoderConfig, params: Any, meta: dict) -> str:
    """Writes the folder (creating it) and returns the sha256 of ``params.npz``. ``meta`` (JSON
    values) is kept as is; its ``source`` is also written at the top level."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = flatten_params(params)
    check_params(config, flat, "the params to save")
    write_atomically(directory / PARAMS_FILE, lambda file: np.savez(file, **flat))
    sha256 = file_sha256(directory / PARAMS_FILE)
    record = {**config.to_json(), "source": str(meta.get("source", "")), "sha256": sha256, "meta": meta}
    write_atomically(directory / CONFIG_FILE, lambda file: file.write(json.dumps(record, indent=2).encode()))
    return sha256


def check_autoencoder_folder(directory: str | pathlib.Path, flag: str = "") -> pathlib.Path:
    """``directory`` when it holds the two files of a stored autoencoder; checked by the jobs before
    they write anything, and by the loader."""
    directory = pathlib.Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / PARAMS_FILE).is_file():
        raise UserError(
            f"{flag + '=' if flag else ''}{directory} is not an autoencoder folder (it needs {CONFIG_FILE} and "
            f"{PARAMS_FILE}); convert one with tools/convert_autoencoder.py or train one with `diffcorrupt autoencoder`"
        )
    return directory


def load_autoencoder(directory: str | pathlib.Path, dtype: Any = jnp.float32) -> LoadedAutoencoder:
    """The stored autoencoder, its hash and every shape checked; ``UserError`` otherwise."""
    directory = check_autoencoder_folder(directory)
    config_path, params_path = directory / CONFIG_FILE, directory / PARAMS_FILE
    try:
        record = json.loads(config_path.read_text())
        config = AutoencoderConfig.from_json(record)
        expected_sha = record["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{config_path} is not a valid autoencoder config ({type(error).__name__}: {error})") from None
    sha256 = file_sha256(params_path)
    if sha256 != expected_sha:
        raise UserError(
            f"{params_path} has sha256 {sha256[:12]}... where {CONFIG_FILE} records {str(expected_sha)[:12]}...; "
            "it is truncated or altered, so convert the weights again"
        )
    try:
        with np.load(params_path, allow_pickle=False) as archive:
            flat = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(f"{params_path} is not a readable .npz ({error}); convert the weights again") from None
    check_params(config, flat, str(params_path))
    params = jax.tree.map(jnp.asarray, unflatten_params(flat))
    return LoadedAutoencoder(config, make_autoencoder(config, dtype), params, record.get("meta", {}), sha256)
