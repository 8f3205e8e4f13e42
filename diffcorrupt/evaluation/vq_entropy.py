"""Sample entropy in a VQ autoencoder's latent space, as the paper measures it.

The paper assigns every latent vector x softly to the VQ codebook, p_k(x) = softmax_k(-||x - c_k||^2 / tau),
and reports H = -sum_k p_k log p_k (nats). As in ``sample_entropy``, whose definition this is, p is
averaged over every latent vector of every sample before the entropy is taken, so that H measures
the set's code usage: most for a set that uses all K codes evenly (log K), none for one that
collapses onto a single code.

- x are the pre-quantisation latents h = quant_conv(encoder(image)), one per latent pixel: what
  LDM's diffusion model is trained on and samples (``VQModel.encode``), unscaled, since the
  codebook lives in that space (VQ-f4's latent scale is 1 anyway); c_k are the codebook entries.
- tau: the paper does not give it. The default is ``sample_entropy.TAU`` = 1 (the plain softmax of
  the negative squared distances), fixed rather than fitted to any data so that every run scored
  with the same autoencoder is scored on the same scale; how sharp it is depends on the codebook's
  spacing, so pass another tau to probe that. The result records the tau, the codebook size and the
  autoencoder's weights hash, since entropies under a different tau or codebook are not comparable.
- Images: uint8 NHWC, mapped to [-1, 1] as ``diffcorrupt encode`` feeds the autoencoder, at their own
  size (the encoder is convolutional), which must be a multiple of its downsampling factor. Grey
  images go into an RGB autoencoder as three equal channels; RGB images into a grey one are refused.
  The number of latent vectors per image grows with the image size, so compare entropies of
  samples of one size.

The soft assignment is computed on the devices next to the encoder, one latent row at a time, and only
each batch's summed assignment (K numbers) comes back: 50k samples of VQ-f4 at 256x256 are 2e8
latent vectors against 8192 codes, too many for the host.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffcorrupt.autoencoders.presets import AutoencoderConfig
from diffcorrupt.autoencoders.storage import CONFIG_FILE, LoadedAutoencoder, check_autoencoder_folder, load_autoencoder
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.sample_entropy import TAU

IMPORT_VQ_F4 = "python tools/convert_autoencoder.py --from=vq-f4/model.ckpt --preset=vq-f4 --out=DIR"


def check_vq_autoencoder(path: str | pathlib.Path, flag: str = "", images: np.ndarray | None = None) -> pathlib.Path:
    """``path`` when it is a stored VQ autoencoder (read from its ``autoencoder.json`` only, so that a
    job can check before it writes anything) that can encode ``images`` where given; ``UserError``
    for a missing folder, a KL one, or images it cannot take."""
    directory = check_autoencoder_folder(path, flag)
    where = f"{flag}={directory}" if flag else str(directory)
    try:
        config = AutoencoderConfig.from_json(json.loads((directory / CONFIG_FILE).read_text()))
        kind = config.kind
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{directory / CONFIG_FILE} is not a valid autoencoder config ({type(error).__name__}: "
                        f"{error})") from None
    if kind != "vq":
        raise UserError(f"{where} holds a {kind.upper()} autoencoder, which has no codebook; sample entropy needs a VQ "
                        f"autoencoder such as LDM's VQ-f4 (`{IMPORT_VQ_F4}`) or one trained with "
                        "`diffcorrupt autoencoder --preset=vq-f4-small`")
    if images is not None:
        prepared_images(images[:1], config)
    return directory


def prepared_images(images: np.ndarray, config: AutoencoderConfig) -> np.ndarray:
    """``images`` (uint8 NHWC) with the channels the autoencoder takes (grey repeated into RGB);
    ``UserError`` for anything it cannot encode. Scaling to [-1, 1] happens on the devices."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise UserError(f"VQ sample entropy needs uint8 images of shape (N, H, W, C), "
                        f"got {images.dtype} {images.shape}")
    if not len(images):
        raise UserError("VQ sample entropy needs at least one image, got none")
    height, width, channels = images.shape[1:]
    factor = config.downsampling_factor
    if height % factor or width % factor or not height or not width:
        raise UserError(f"{height}x{width} images cannot be encoded by a VQ autoencoder that downsamples by {factor}; "
                        f"its images need sides that are positive multiples of {factor}")
    if channels == 1 and config.in_channels == 3:
        return np.repeat(images, 3, axis=-1)
    if channels != config.in_channels:
        raise UserError(f"the VQ autoencoder takes {config.in_channels}-channel images but the samples have "
                        f"{channels} channels; use a VQ autoencoder trained on {channels}-channel images")
    return images


def _usage_sum(autoencoder: LoadedAutoencoder, tau: float):
    """(params, uint8 images (B, H, W, C), valid (B,)) -> the sum over the valid images' latent
    vectors of softmax(-||h - c||^2 / tau) (K,), float32."""
    module = autoencoder.module

    def usage(params, images, valid):
        h = module.apply(params, images.astype(jnp.float32) / 127.5 - 1.0, method="encode")
        codebook = params["params"]["codebook"].astype(jnp.float32)
        code_norms = jnp.sum(codebook**2, axis=-1)

        def add_row(total, row):  # one latent row of every image (B, W', D): B W' x K distances at once
            cross = jnp.einsum("bwd,kd->bwk", row, codebook, precision=jax.lax.Precision.HIGHEST)
            distances = jnp.maximum(jnp.sum(row**2, axis=-1, keepdims=True) - 2.0 * cross + code_norms, 0.0)
            return total + jnp.sum(jax.nn.softmax(-distances / tau, axis=-1), axis=1), None

        # Scanning latent rows rather than images leaves each device its own share of the batch axis.
        zeros = jnp.zeros((h.shape[0], codebook.shape[0]), jnp.float32)
        per_image = jax.lax.scan(add_row, zeros, jnp.moveaxis(h, 1, 0))[0]
        return jnp.sum(jnp.where(valid[:, None] > 0, per_image, 0.0), axis=0)

    return usage


def vq_sample_entropy(images: np.ndarray, autoencoder_dir: str | pathlib.Path, tau: float = TAU,
                      batch_size: int = 32, mesh: Mesh | None = None) -> dict[str, float | str | int]:
    """The metrics entry of uint8 NHWC ``images`` under the VQ autoencoder in ``autoencoder_dir``:
    ``vq_sample_entropy`` (nats), ``vq_sample_entropy_tau``, ``vq_sample_entropy_codes`` (K) and
    ``vq_autoencoder`` (the sha256 of its params.npz). Batches of ``batch_size`` (rounded up to a
    multiple of the devices of ``mesh``, this process's own by default) are split over the devices,
    the last one padded, so the encoder compiles once; the padding is masked out."""
    if not tau > 0:
        raise UserError(f"the VQ sample entropy's tau must be positive, got {tau}")
    autoencoder = load_autoencoder(check_vq_autoencoder(autoencoder_dir))
    images = prepared_images(images, autoencoder.config)
    mesh = mesh if mesh is not None else Mesh(np.array(jax.local_devices()), ("data",))
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
    rows, replicated = NamedSharding(mesh, PartitionSpec(mesh.axis_names)), NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(autoencoder.params, replicated)
    usage = jax.jit(_usage_sum(autoencoder, float(tau)), in_shardings=(replicated, rows, rows),
                    out_shardings=replicated)
    total = np.zeros(autoencoder.config.codebook_size, np.float64)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        valid = np.zeros(batch_size, np.float32)
        valid[:len(batch)] = 1.0
        if len(batch) < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]), batch.dtype)])
        total += np.asarray(jax.device_get(usage(params, jax.device_put(batch, rows), jax.device_put(valid, rows))),
                            np.float64)
    usage_mean = total / total.sum()  # each latent vector adds 1 (up to rounding): the mean assignment pbar
    return {"vq_sample_entropy": float(scipy.special.entr(usage_mean).sum()), "vq_sample_entropy_tau": float(tau),
            "vq_sample_entropy_codes": len(usage_mean), "vq_autoencoder": autoencoder.sha256}
