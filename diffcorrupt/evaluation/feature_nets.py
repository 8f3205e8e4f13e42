"""The feature networks the evaluator measures in, chosen by name.

``inception`` is the field's standard (FID, sFID, IS, precision/recall on the TF FID graph's
features) and needs its weights converted once (``python tools/convert_inception.py``).
``classifier`` is a small network the project trains on the run's own dataset: where Inception's
ImageNet features say little (28x28 Fashion-MNIST, the procedural shapes), its feature space gives
a meaningful Frechet distance, and its predictions say whether a sample shows its condition.
``clip`` is CLIP ViT-B/16's image embedding (the paper's space for RMD and memorization, and the CLIP
score's): its weights are the user's to convert (``tools/convert_clip.py``), and it is measured by
default wherever they are. Without them the metrics file says, in ``clip_note``, why it is absent.
"""

from __future__ import annotations

import pathlib

import ml_collections

from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.reference import FeatureNet

FEATURE_NETS = ("inception", "classifier", "clip")
# Datasets whose images Inception's ImageNet features describe poorly: measured by default in the
# features of a classifier trained on them.
CLASSIFIER_DATASETS = ("fashion_mnist", "captioned_shapes")


def clip_weights_path(clip_weights: str | None) -> pathlib.Path:
    from diffcorrupt.evaluation.clip_weights import default_weights_path

    return pathlib.Path(clip_weights).expanduser() if clip_weights else default_weights_path()


def clip_note(clip_weights: str | None) -> str:
    """The one line a metrics file and a report give where CLIP was not measured for want of weights."""
    from diffcorrupt.evaluation.clip_weights import CONVERT_HINT

    return (f"CLIP metrics not computed: no CLIP weights at {clip_weights_path(clip_weights)}; {CONVERT_HINT} "
            "(or pass --clip_weights=FILE)")


def default_feature_nets(data_config: ml_collections.ConfigDict | None, clip_weights: str | None = None) -> list[str]:
    names = ["classifier"] if data_config is not None and data_config.name in CLASSIFIER_DATASETS else ["inception"]
    return names + ["clip"] if clip_weights_path(clip_weights).is_file() else names


def parse_feature_nets(text: str | None, data_config: ml_collections.ConfigDict | None,
                       clip_weights: str | None = None) -> list[str]:
    if not text:
        return default_feature_nets(data_config, clip_weights)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FEATURE_NETS]
    if unknown or not names:
        raise UserError(f"--features={text}: use a comma-separated list of {', '.join(FEATURE_NETS)}")
    return names


def check_feature_net(name: str, *, data_config: ml_collections.ConfigDict | None,
                      inception_weights: str | None = None, clip_weights: str | None = None) -> None:
    """What ``make_feature_net`` needs, checked without loading or training anything, so that a
    job refuses before it samples or trains a classifier for minutes."""
    if name == "inception":
        from diffcorrupt.evaluation.inception_weights import default_weights_path, existing_weights

        existing_weights(inception_weights or default_weights_path())
    elif name == "clip":
        from diffcorrupt.evaluation.clip_weights import existing_weights as existing_clip_weights

        existing_clip_weights(clip_weights_path(clip_weights))
    elif data_config is None or data_config.name not in CLASSIFIER_DATASETS:
        dataset = "unknown" if data_config is None else data_config.name
        raise UserError(f"--features=classifier needs samples of a run on {' or '.join(CLASSIFIER_DATASETS)} "
                        f"(these are of dataset '{dataset}'); use --features=inception")


def make_feature_net(name: str, *, data_config: ml_collections.ConfigDict | None,
                     inception_weights: str | None = None, clip_weights: str | None = None) -> FeatureNet:
    check_feature_net(name, data_config=data_config, inception_weights=inception_weights, clip_weights=clip_weights)
    if name == "inception":
        from diffcorrupt.evaluation.inception_weights import InceptionFeatures, default_weights_path, load_inception_params

        return InceptionFeatures(load_inception_params(inception_weights or default_weights_path()))
    if name == "clip":
        from diffcorrupt.evaluation.clip_features import ClipFeatures
        from diffcorrupt.evaluation.clip_weights import load_clip

        return ClipFeatures(load_clip(clip_weights_path(clip_weights)))
    from diffcorrupt.evaluation.classifier_training import ensure_classifier, load_classifier

    return load_classifier(ensure_classifier(data_config))
