"""``diffcorrupt evaluate``: FID / sFID / IS / precision / recall (and more) of a sample set.

  diffcorrupt evaluate --samples=PATH [--reference=dataset[:split[:subset]]|PATH] [--train_reference=...|none]
                       [--features=inception,classifier,clip] [--inception_weights=FILE] [--clip_weights=FILE]
                       [--class_names=FILE] [--vq_autoencoder=DIR] [--reference_count=N]
                       [--config=configs/<name>.py[:<preset>] [--config.<key>=<value> ...]] [--out=FILE.json]

``--samples`` is a folder written by ``diffcorrupt sample`` (its settings.json names the run, whose
saved config then gives the dataset), an ADM-layout .npz or an image folder. ``--reference``
defaults to the split the run trained on (for a latent run, of the images its latents encode); ``--train_reference`` (default: the same split) gives the
training images for the memorization measures. The metrics JSON (default: ``metrics.json`` beside
the samples) holds every number with its provenance: checkpoint, step, sampler, steps, guidance
scale, sample count, feature network and weights hash, reference and protocol. CLIP features are
measured wherever CLIP weights are (``tools/convert_clip.py`` converts them); without them the file
says so in ``clip_note``. ``--class_names`` names the classes for the CLIP score's captions where
the dataset's own names are WordNet ids (ImageNet). ``--vq_autoencoder`` adds the paper's sample
entropy in a VQ autoencoder's latent space, under the network name ``vq``. A single-host job:
started as several processes (``local_processes``, a pod), process 0 scores and the others exit.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from diffcorrupt import jobs
from diffcorrupt.config.loading import load_config
from diffcorrupt.errors import UserError
from diffcorrupt.data.latent_encoding import pixel_data_config
from diffcorrupt.data.sources.registry import condition_of, make_source
from diffcorrupt.evaluation.classifier import check_classifier_input
from diffcorrupt.evaluation.clip_score import TEMPLATE, read_class_names, sample_captions
from diffcorrupt.evaluation.feature_nets import (
    check_feature_net,
    clip_note,
    clip_weights_path,
    make_feature_net,
    parse_feature_nets,
)
from diffcorrupt.evaluation.copies import COPY_RATIO, copies, copy_note
from diffcorrupt.evaluation.reference import check_reference, reference_images, reference_stats
from diffcorrupt.evaluation.sample_files import SampleSet, read_samples
from diffcorrupt.evaluation.scores import NEIGHBOURS, score
from diffcorrupt.evaluation.vq_entropy import check_vq_autoencoder, vq_sample_entropy
from diffcorrupt.flag_types import positive_int
from diffcorrupt.output_paths import output_file, write_atomically
from diffcorrupt.parallel.distributed import launched_as_peer
from diffcorrupt.evaluation.edge_fidelity import control_fidelity
from diffcorrupt.sampling.restore import saved_run_config

# Bumped when evaluate computes new metrics: a batch report recomputes metrics files of older versions.
METRICS_VERSION = 4
PROTOCOL = {
    "inception": "TF FID Inception (2015-12-05) in Flax: uint8 -> bilinear resize to 299 as TF1 ResizeBilinear "
                 "(align_corners=False, no half-pixel centres) -> (x - 128) / 128; FID on pool_3, sFID on the "
                 "first 7 channels of mixed_6/conv, IS on the 1008-way logits (5000-sample splits)",
    "classifier": "features (pool) and predictions of a CNN trained on the clean training split of the run's dataset",
    "clip": "CLIP image embeddings (the joint space, unnormalised) of uint8 images prepared as CLIP's own transform: "
            "shorter side to the model's resolution with Pillow's bicubic, centre crop, (x / 255 - mean) / std; "
            "FD, precision/recall and the rest computed on them as on any feature network",
    "clip_score": f"CLIPScore: mean of 100 max(cos(image, text), 0) in CLIP's joint space; text runs against their "
                  f"captions, class runs against '{TEMPLATE}' filled with the class name",
    "precision_recall": f"ADM k-NN manifolds, k = {NEIGHBOURS}, squared L2 in pooled features",
    "memorization": "L2-normalised pooled features; ratio of samples whose nearest training feature is closer "
                    "than 0.12, and the mean distance to the 5 nearest, by exact k-NN on the devices (the paper's "
                    "space is CLIP's)",
    "sample_entropy": "entropy (nats) of the samples' mean soft code assignment softmax(-||x - c||^2 / tau) over "
                      "a k-means codebook (up to 256 codes) of the L2-normalised reference features, tau the "
                      "reference's mean squared distance to its code; sample_entropy_real is the reference's own "
                      "(the paper uses a VQ autoencoder's codebook)",
    "top_pr": "TopP&R (Kim et al. 2023) as their top_pr 0.2.1 computes it on features of more than 3 dimensions: "
              "a fixed Xavier-normal projection to 32 dimensions, balloon-estimated bandwidths (k = 160), cosine "
              "KDEs with bootstrap confidence bands (alpha 0.1, 10 resamples, seed 42)",
    "vq": "sample entropy (nats) of the samples' mean soft code assignment softmax(-||h - c||^2 / tau) over the VQ "
          "autoencoder's codebook, h its unscaled pre-quantisation latents of the uint8 -> [-1, 1] images at their own "
          "size, tau 1 (the paper gives none)",
    "pixels": f"copies of training images (Yoon et al. 2023, Gu et al. 2023): the share of samples whose nearest "
              f"training image in pixel L2 ([0, 1] values, exact search) is closer than {COPY_RATIO:.3g} times the "
              "second nearest; the neighbours file shows the most copy-like samples beside their 3 nearest",
    "edge_f1": "control fidelity of a Canny-personalized run: F1 of each sample's Canny edges (thresholds 100/200) "
               "against its control's, an edge counted as matched within 1 pixel (chessboard); edge_f1_other "
               "scores each sample against the control of the next sample of its class, the level of a model "
               "that draws its class but ignores its control",
    "rmd": "relative Mahalanobis distance of each sample at its class: class Gaussians with a shared covariance "
           "minus one class-agnostic Gaussian, fitted on the labelled reference features (Ren et al. 2021); "
           "rmd_top1pct is the mean of the highest 1%, the per-sample values are in the rmd file",
}


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("evaluate", __doc__.splitlines()[0], config=False)
    parser.add_argument("--samples", required=True)
    parser.add_argument("--reference", default=None, help="dataset[:split[:subset]], an ADM .npz, an image folder or a stats .npz")
    parser.add_argument("--train_reference", default=None, help="training images for memorization, or 'none'")
    parser.add_argument("--features", default=None, help="inception, classifier and/or clip (default: by dataset, and "
                        "clip where its weights are)")
    parser.add_argument("--inception_weights", default=None, help="default: the file tools/convert_inception.py writes")
    parser.add_argument("--clip_weights", default=None, help="default: the file tools/convert_clip.py writes")
    parser.add_argument("--class_names", default=None, help="one class name per line, for the CLIP score's captions")
    parser.add_argument("--vq_autoencoder", default=None, help="a VQ autoencoder folder: sample entropy in its latents")
    parser.add_argument("--reference_count", type=positive_int, default=None, help="use the first N reference images")
    parser.add_argument("--config", default=None, help="the dataset config, for samples not written by `diffcorrupt sample`")
    parser.add_argument("--out", default=None)
    flags, overrides = parser.parse_job(argv)
    jobs.log_progress()
    if launched_as_peer():
        logging.info("evaluate scores on process 0 of the launch alone; this process has nothing to do")
        return 0
    data_config = load_config(flags.config, overrides).data if flags.config else None
    result = evaluate(flags.samples, reference=flags.reference, train_reference=flags.train_reference,
                      features=flags.features, inception_weights=flags.inception_weights, clip_weights=flags.clip_weights,
                      class_names=flags.class_names, vq_autoencoder=flags.vq_autoencoder,
                      reference_count=flags.reference_count, data_config=data_config, out=flags.out)
    print(json.dumps(result["networks"]), flush=True)
    return 0


def evaluate(samples_path: str | Path, *, reference: str | None = None, train_reference: str | None = None,
             features: str | None = None, inception_weights: str | None = None, clip_weights: str | None = None,
             class_names: str | None = None, vq_autoencoder: str | None = None, reference_count: int | None = None,
             data_config: ml_collections.ConfigDict | None = None, out: str | Path | None = None,
             requested: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores a sample set and writes the metrics JSON; returns what it wrote. ``requested`` (the
    batch job's arguments) is stored with the result, so a batch asking the same can skip it."""
    samples = read_samples(samples_path)
    if data_config is None and samples.settings:
        data_config = saved_run_config(samples.settings["workdir"], samples.settings["step"]).data
    if data_config is not None:
        data_config = pixel_data_config(data_config)
    reference = reference or _default_reference(data_config)
    train_reference = train_reference or ("dataset" if data_config is not None else "none")
    out_path = output_file(_out_path(samples_path, out), "--out")
    names = check_scoring(features, data_config, inception_weights, [reference, train_reference], clip_weights,
                          vq_autoencoder)
    _check_samples(samples, names, data_config)
    if vq_autoencoder:
        check_vq_autoencoder(vq_autoencoder, "--vq_autoencoder", samples.images)
    captions = sample_captions(samples.conditions(), _class_names(class_names, data_config)) if "clip" in names else None
    result: dict[str, Any] = {
        "samples": samples.source, "num_samples": len(samples.images), "provenance": samples.settings,
        "reference": {"spec": reference, "count": reference_count}, "train_reference": train_reference,
        "networks": {}, "protocol": {}, "requested": requested, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if not clip_weights_path(clip_weights).is_file():
        result["clip_note"] = clip_note(clip_weights)
    rmd_files: dict[str, Any] = {}
    for name in names:
        net = make_feature_net(name, data_config=data_config, inception_weights=inception_weights,
                               clip_weights=clip_weights)
        ref = reference_stats(reference, net, data_config=data_config, count=reference_count)
        train = None
        if train_reference != "none":
            same = train_reference == reference
            train = ref if same else reference_stats(train_reference, net, data_config=data_config, count=reference_count)
        logging.info("evaluate: %s features of %d samples", name, len(samples.images))
        metrics, distributions = score(net, samples.images, samples.conditions(), ref, train,
                                       captions if name == "clip" else None)
        result["networks"][name] = {"weights_sha256": net.weights_hash, "reference_images": ref.meta.get("count"),
                                    "metrics": metrics}
        result["protocol"][name] = PROTOCOL[name]
        if name == "clip":
            result["protocol"]["clip_score"] = PROTOCOL["clip_score"]
        if "rmd" in distributions:
            rmd_files[name] = distributions["rmd"]
            result["networks"][name]["rmd_file"] = _rmd_path(out_path).name
            result["protocol"]["rmd"] = PROTOCOL["rmd"]
    if vq_autoencoder:
        logging.info("evaluate: sample entropy of %d samples in %s's latents", len(samples.images), vq_autoencoder)
        entropy = {key.removeprefix("vq_"): value for key, value in vq_sample_entropy(samples.images, vq_autoencoder).items()}
        result["networks"]["vq"] = {"weights_sha256": entropy.pop("autoencoder"), "metrics": entropy}
        result["protocol"]["vq"] = PROTOCOL["vq"]
    result["protocol"]["precision_recall"] = PROTOCOL["precision_recall"]
    result["protocol"]["sample_entropy"] = PROTOCOL["sample_entropy"]
    result["protocol"]["top_pr"] = PROTOCOL["top_pr"]
    if train_reference != "none":
        result["protocol"]["memorization"] = PROTOCOL["memorization"]
        _judge_copies(result, samples.images, train_reference, data_config, reference_count, out_path)
    if samples.controls is not None and data_config is not None and data_config.control == "canny":
        result["control"] = control_fidelity(samples.images, samples.controls, samples.labels)
        result["protocol"]["edge_f1"] = PROTOCOL["edge_f1"]
    if rmd_files:  # before the JSON, so that a metrics file never names an rmd file that is not there
        write_atomically(_rmd_path(out_path), lambda handle: np.savez(handle, **rmd_files))
    write_atomically(out_path, lambda handle: handle.write((json.dumps(result, indent=2, sort_keys=True) + "\n").encode()))
    return result


def _judge_copies(result: dict[str, Any], images: np.ndarray, train_reference: str,
                  data_config: ml_collections.ConfigDict | None, count: int | None, out_path: Path) -> None:
    """Adds the pixel-space copies of training images (network 'pixels', with the nearest-neighbour
    grid beside the metrics file), or a ``copies_note`` saying why they cannot be judged."""
    found = reference_images(train_reference, data_config, count)
    if found is None:
        result["copies_note"] = "copies are judged on training images, and --train_reference is a statistics file"
        return
    train_images, total = found
    note = copy_note(images, train_images(0, 1).shape[1:] if total else images.shape[1:], total)
    if note:
        result["copies_note"] = note
        return
    logging.info("evaluate: copies of %d training images among %d samples, in pixel space", total, len(images))
    grid = _neighbours_path(out_path)
    result["networks"]["pixels"] = {"training_images": total, "neighbours_file": grid.name,
                                    "metrics": copies(images, train_images, total, grid)}
    result["protocol"]["pixels"] = PROTOCOL["pixels"]


def check_scoring(features: str | None, data_config: ml_collections.ConfigDict | None, inception_weights: str | None,
                  references: list[str], clip_weights: str | None = None, vq_autoencoder: str | None = None) -> list[str]:
    """The feature networks ``features`` names for this data, each checked with the references
    ('none' skipped) before any classifier is trained or feature computed: minutes of work
    otherwise (and, in a report, a sampled set), lost to a typo."""
    names = parse_feature_nets(features, data_config, clip_weights)
    for name in names:
        check_feature_net(name, data_config=data_config, inception_weights=inception_weights, clip_weights=clip_weights)
    if vq_autoencoder:
        check_vq_autoencoder(vq_autoencoder, "--vq_autoencoder")
    for spec in dict.fromkeys(references):
        if spec != "none":
            check_reference(spec, data_config)
    return names


def _check_samples(samples: SampleSet, names: list[str], data_config: ml_collections.ConfigDict | None) -> None:
    """Samples the networks cannot take, or with labels the dataset does not have, refused up front too."""
    if "classifier" in names:
        size, channels = data_config.image_size, data_config.channels
        check_classifier_input(samples.images, (size, size, channels), f"{data_config.name}-{size}px")
    if samples.labels is None or data_config is None or not len(samples.labels):
        return
    if condition_of(data_config) == "class":
        num_classes = make_source(data_config).num_classes
        if samples.labels.max() >= num_classes:
            raise UserError(f"{samples.source} holds label {samples.labels.max()}, but dataset '{data_config.name}' "
                            f"has {num_classes} classes (labels 0 to {num_classes - 1}); pass the samples of a run "
                            "on this dataset, or the --config it was trained with")


def _class_names(path: str | None, data_config: ml_collections.ConfigDict | None) -> list[str] | None:
    """--class_names, else the dataset's own names (None for text data or samples of no known dataset)."""
    if path:
        return read_class_names(path)
    if data_config is None or condition_of(data_config) != "class":
        return None
    return list(make_source(data_config).class_names)


def _default_reference(data_config: ml_collections.ConfigDict | None) -> str:
    if data_config is None:
        raise UserError("these samples name no run: pass --reference (an ADM .npz, an image folder or statistics) "
                        "or --config to compare with that dataset")
    return "dataset"


def _out_path(samples_path: str | Path, out: str | Path | None) -> Path:
    if out:
        return Path(out)
    path = Path(samples_path)
    return path / "metrics.json" if path.is_dir() else path.with_name(path.stem + "_metrics.json")


def _neighbours_path(out_path: Path) -> Path:
    """Where the grid of the most copy-like samples and their nearest training images goes."""
    return out_path.with_name(out_path.stem + "_neighbours.png")


def _rmd_path(out_path: Path) -> Path:
    """Where the per-sample RMD of each feature network goes: beside the metrics JSON."""
    return out_path.with_name(out_path.stem + "_rmd.npz")


if __name__ == "__main__":
    sys.exit(jobs.run("evaluate", main))
