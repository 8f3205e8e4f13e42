"""Reference statistics: features of real images, computed once per (images, feature network) and cached.

A reference is what samples are compared with: the mean and covariance of its pooled features
(FID), of its spatial features (sFID), the pooled features themselves (precision/recall and
memorization need the points, not just their moments) and, where the images have classes, their
labels (RMD fits its class Gaussians on them). It is named by a spec:

- ``dataset[:split[:subset]]``: the clean images of the run's dataset (the config saved with the
  checkpoint that made the samples), centre-cropped to the training resolution exactly as training
  saw them. Plain ``dataset`` is what the run trained on, its subset included; a named split is the
  whole split unless a subset follows (``dataset:test:balanced[5000:10000]``, the held-out images
  of a run trained on ``balanced[0:500]`` of the same split; see data/sources/subset.py);
- a path to an ADM-layout ``.npz`` (``arr_0``) or an image folder;
- a path to a stats ``.npz`` this module wrote, reused as it is.

Cached as ``<cache>/reference/<name>-<network>-<key>.npz``, the key hashing the spec, the image
count, the resolution and the feature network's weights, so a change in any of them recomputes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Callable, Protocol

import ml_collections
import numpy as np
from absl import logging

from diffcorrupt.cache import cache_root
from diffcorrupt.data.sources.subset import parse_subset
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.frechet import gaussian_stats, spatial_features
from diffcorrupt.evaluation.sample_files import read_samples
from diffcorrupt.output_paths import write_atomically

STATS_KEYS = ("features", "mu", "sigma")
# Dataset references are read and featurised this many images at a time, so that 1.28M ImageNet training
# images never sit in memory at once (10,000 at 256 px are 2 GB); only their features are kept.
REFERENCE_CHUNK = 10_000


class FeatureNet(Protocol):
    name: str
    weights_hash: str

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass
class FeatureStats:
    features: np.ndarray  # (N, D) pooled features
    mu: np.ndarray
    sigma: np.ndarray
    spatial_mu: np.ndarray | None
    spatial_sigma: np.ndarray | None
    meta: dict[str, Any]
    labels: np.ndarray | None = None  # (N,) class labels of the features, where the images have them


def stats_of(features: dict[str, np.ndarray], meta: dict[str, Any], labels: np.ndarray | None = None) -> FeatureStats:
    mu, sigma = gaussian_stats(features["pool"])
    spatial_mu = spatial_sigma = None
    if "spatial" in features:
        spatial_mu, spatial_sigma = gaussian_stats(spatial_features(features["spatial"]))
    return FeatureStats(features["pool"].astype(np.float32), mu, sigma, spatial_mu, spatial_sigma, meta,
                        None if labels is None else np.asarray(labels, np.int64))


def save_stats(stats: FeatureStats, path: Path) -> None:
    arrays = {"features": stats.features, "mu": stats.mu, "sigma": stats.sigma, "meta": np.asarray(json.dumps(stats.meta))}
    if stats.spatial_mu is not None:
        arrays.update(spatial_mu=stats.spatial_mu, spatial_sigma=stats.spatial_sigma)
    if stats.labels is not None:
        arrays["labels"] = stats.labels
    write_atomically(path, lambda handle: np.savez(handle, **arrays))


def load_stats(path: Path) -> FeatureStats:
    try:
        with np.load(path) as data:
            if not all(key in data.files for key in STATS_KEYS):
                raise UserError(f"{path} is not a reference-statistics file (it lacks {', '.join(STATS_KEYS)})")
            spatial = "spatial_mu" in data.files
            return FeatureStats(data["features"], data["mu"], data["sigma"], data["spatial_mu"] if spatial else None,
                                data["spatial_sigma"] if spatial else None, json.loads(str(data["meta"])),
                                data["labels"] if "labels" in data.files else None)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"reference statistics {path} do not read back ({err}); delete the file to recompute it") from err


def reference_stats(spec: str, net: FeatureNet, *, data_config: ml_collections.ConfigDict | None,
                    count: int | None = None) -> FeatureStats:
    """The statistics of reference ``spec`` in ``net``'s features, from the cache when present."""
    path = Path(spec)
    if path.suffix == ".npz" and path.is_file() and _is_stats_file(path):
        stats = load_stats(path)
        _check_network(stats, net, path)
        return stats
    name, key_parts, load = _resolve(spec, data_config, count)
    key = hashlib.sha256(json.dumps([key_parts, net.name, net.weights_hash], sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_root() / "reference" / f"{name}-{net.name}-{key}.npz"
    if cached.is_file():
        return load_stats(cached)
    images, labels, total = load()
    logging.info("reference %s: computing %s features of %d images (cached as %s)", spec, net.name, total, cached)
    parts = []
    for start in range(0, total, REFERENCE_CHUNK):
        parts.append(net(images(start, min(start + REFERENCE_CHUNK, total))))
        logging.info("reference %s: %d of %d images", spec, min(start + REFERENCE_CHUNK, total), total)
    features = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]} if parts else net(images(0, 0))
    stats = stats_of(features, {"spec": spec, "count": total, "network": net.name,
                                "weights_sha256": net.weights_hash, "key": key_parts}, labels)
    save_stats(stats, cached)
    return stats


def reference_images(spec: str, data_config: ml_collections.ConfigDict | None,
                     count: int | None = None) -> tuple[Callable[[int, int], np.ndarray], int] | None:
    """(images(start, stop) -> uint8 NHWC, count) of a reference given as images (a dataset, an ADM
    .npz or a folder); None for a statistics file, which holds no images."""
    path = Path(spec)
    if path.suffix == ".npz" and path.is_file() and _is_stats_file(path):
        return None
    images, _, total = _resolve(spec, data_config, count)[2]()
    return images, total


def check_reference(spec: str, data_config: ml_collections.ConfigDict | None) -> None:
    """What ``reference_stats`` can refuse without computing a feature: a path that does not exist,
    a dataset without a config or not on this machine."""
    path = Path(spec)
    if path.suffix == ".npz" and path.is_file() and _is_stats_file(path):
        return
    _resolve(spec, data_config, None)
    if spec.partition(":")[0] == "dataset":
        from diffcorrupt.data.sources.registry import check_available

        check_available(data_config)


def _is_stats_file(path: Path) -> bool:
    try:
        with np.load(path) as data:
            return "mu" in data.files and "features" in data.files
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"{path} does not read as an .npz file ({err}); it may be truncated, copy it again") from err


def _check_network(stats: FeatureStats, net: FeatureNet, path: Path) -> None:
    if stats.meta.get("network") != net.name or stats.meta.get("weights_sha256") != net.weights_hash:
        raise UserError(f"reference statistics {path} were computed with {stats.meta.get('network')} weights "
                        f"{str(stats.meta.get('weights_sha256'))[:12]}, not the {net.name} weights {net.weights_hash[:12]} "
                        "in use; pass the images instead, or statistics made with these weights")


def _resolve(spec: str, data_config: ml_collections.ConfigDict | None, count: int | None):
    """(cache name, what the cache key hashes, a loader of (images(start, stop) -> uint8 images, their
    class labels or None, the image count)) of a spec. The key's ``labels`` entry retires the caches
    written before labels were kept."""
    name, _, rest = spec.partition(":")
    if name == "dataset":
        if data_config is None:
            raise UserError(f"--reference={spec} needs the run's config: evaluate a folder written by `diffcorrupt "
                            "sample` (its settings.json names the run) or pass --config")
        data = dataset_config(spec, data_config, "--reference")
        parts = {k: data[k] for k in ("name", "split", "subset", "data_dir", "image_size", "channels", "num_examples")}
        parts.update(count=count, labels=True)
        return f"{data.name}-{data.split}-{data.image_size}px", parts, lambda: _dataset_loader(data, count)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"--reference={spec} does not exist; pass dataset[:split[:subset]], an ADM .npz, an image folder "
                        "or a statistics .npz")
    stat = path.stat()
    parts = {"path": str(path.absolute()), "size": stat.st_size, "mtime": stat.st_mtime, "count": count, "labels": True}
    return path.stem, parts, lambda: _file_loader(read_samples(path), count)


def dataset_config(spec: str, data_config: ml_collections.ConfigDict, flag: str) -> ml_collections.ConfigDict:
    """The ``data`` config of a ``dataset[:split[:subset]]`` spec, given as ``flag``: the run's own,
    or a named split, whole unless a subset follows it."""
    data = ml_collections.ConfigDict(data_config.to_dict())
    split, _, subset = spec.partition(":")[2].partition(":")
    if split or subset:
        data.split, data.subset = split or data.split, subset
        if subset:
            parse_subset(subset, f"the subset of {flag}={spec}")
    return data


def _file_loader(samples, count: int | None):
    images = samples.images[:count]
    return (lambda start, stop: images[start:stop]), None if samples.labels is None else samples.labels[:count], len(images)


def _dataset_loader(data: ml_collections.ConfigDict, count: int | None):
    """The clean images of a configured dataset as training sees them before its random flip
    (centre-cropped to data.image_size, data.channels channels, uint8), read a range at a time."""
    from diffcorrupt.data.preprocess import clean_images
    from diffcorrupt.data.sources.registry import make_source

    source = make_source(data)
    total = len(source) if count is None else min(count, len(source))

    def images(start: int, stop: int) -> np.ndarray:
        return clean_images(source, data.image_size, data.channels, stop, start)

    return images, dataset_labels(data, count), total


def dataset_labels(data: ml_collections.ConfigDict, count: int | None) -> np.ndarray | None:
    """The clean class labels of the first ``count`` images, or None for a dataset of captions."""
    from diffcorrupt.data.sources.registry import condition_of, make_source

    return make_source(data).labels()[:count] if condition_of(data) == "class" else None
