"""Per-example preprocessing: ADM centre crop and resize, channel conversion, keyed flip, [-1, 1];
for pre-encoded latents, a keyed draw from a stored KL posterior and the autoencoder's scale factor.

The crop follows guided-diffusion's ``center_crop_arr`` (halve with a box filter while the short
side is at least twice the target, then bicubic-resize the short side to the target, then crop the
centre), the protocol the FID numbers of the field are computed under. The flip is keyed by
(seed, index, epoch), so it does not depend on which worker or process reads the example.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from diffcorrupt.data.control_maps import edge_map, folder_map
from diffcorrupt.data.keyed_random import derive_key, keyed_uniform
from diffcorrupt.data.sources.base import Element


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 HWC -> uint8 (size, size, C), guided-diffusion's centre crop."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    while min(pil.size) >= 2 * size:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = size / min(pil.size)
    pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    array = np.asarray(pil)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    array = array[top:top + size, left:left + size]
    return array[..., None] if array.ndim == 2 else array


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grey <-> RGB with the ITU-R 601 luma weights that PIL's 'L' mode uses."""
    if image.shape[-1] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(luma).astype(np.uint8)[..., None]


def training_pixels(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 HWC -> the uint8 (size, size, channels) image training sees before its flip."""
    return convert_channels(center_crop_resize(np.asarray(image), size), channels)


def clean_images(source, size: int, channels: int, count: int | None = None, start: int = 0) -> np.ndarray:
    """Images ``start`` to ``count`` (default: all) of a source, as training sees them, stacked: the
    clean references of the evaluator (a chunk at a time) and the training set of a small autoencoder."""
    total = len(source) if count is None else min(count, len(source))
    return np.stack([training_pixels(source[i]["image"], size, channels) for i in range(start, total)])


class Preprocess:
    """Picklable element transform for grain (worker processes import it by reference)."""

    def __init__(self, image_size: int, channels: int, random_flip: bool, seed: int, *, latent_kind: str = "latent",
                 scale_factor: float = 1.0, control: str = ""):
        """``image_size`` and ``channels``: the pixels' (for latents, those of the encoded images, read
        only to draw the ``control`` map from)."""
        self.image_size = image_size
        self.channels = channels
        self.control = control
        self.random_flip = random_flip
        self.latent_kind = latent_kind
        self.scale_factor = scale_factor
        self._flip_key = derive_key(seed, "preprocess/flip")
        self._posterior_key = derive_key(seed, "preprocess/posterior")

    def posterior_sample(self, latent: np.ndarray, index: int, epoch: int) -> np.ndarray:
        """A stored KL posterior (mean and log-variance on the channel axis) becomes a fresh draw for
        each (index, epoch), as if the image were encoded anew each epoch; a stored latent is used
        as it is. The noise is keyed, so it is the same whichever worker or restart reads it."""
        if self.latent_kind != "moments":
            return latent
        mean, logvar = np.split(latent, 2, axis=-1)
        rng = np.random.default_rng((self._posterior_key, int(index), int(epoch)))
        std = np.exp(0.5 * np.clip(logvar, -30.0, 20.0))
        return mean + std * rng.standard_normal(mean.shape, dtype=np.float32)

    def flips(self, index: int, epoch: int) -> bool:
        return self.random_flip and keyed_uniform(self._flip_key, index, epoch) < 0.5

    def __call__(self, element: Element, epoch: int) -> Element:
        element = dict(element)
        flip = self.flips(element["index"], epoch)
        if "latent" in element:  # pre-encoded, at size; a flip reads the mirrored image's encoding
            mirrored = element.pop("latent_flipped", None)  # present wherever random_flip is on (pipeline.py)
            latent = self.posterior_sample(np.asarray(mirrored if flip else element["latent"], np.float32),
                                           element["index"], epoch)
            element["latent"] = latent * np.float32(self.scale_factor)
        if "image" in element:  # for latents: their pixels, read for the control map alone
            pixels = training_pixels(element.pop("image"), self.image_size, self.channels)
            if flip:
                pixels = pixels[:, ::-1]
            if "latent" not in element:
                element["image"] = pixels.astype(np.float32) / 127.5 - 1.0
            if self.control == "canny":
                element["control"] = edge_map(pixels)
        if self.control == "folder":
            element["control"] = folder_map(element.pop("control_image"), self.image_size, flip)
        element["epoch"] = epoch
        element["flipped"] = flip
        return element
