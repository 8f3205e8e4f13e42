"""The feature networks the evaluator measures in, chosen by name.

``inception`` is the field's standard (FID, sFID, IS, precision/recall on the TF FID graph's
features) and needs its weights converted once (``python tools/convert_inception.py``).
``classifier`` is a small network the project trains on the run's own dataset: where Inception's
ImageNet features say little (28x28 Fashion-MNIST, the procedural shapes), its feature space gives
a meaningful Frechet distance, and its predictions say whether a sample shows its condition.
"""

from __future__ import annotations

import ml_collections

from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.reference import FeatureNet

FEATURE_NETS = ("inception", "classifier")
# Datasets whose images Inception's ImageNet features describe poorly: measured by default in the
# features of a classifier trained on them.
CLASSIFIER_DATASETS = ("fashion_mnist", "captioned_shapes")


def default_feature_nets(data_config: ml_collections.ConfigDict | None) -> list[str]:
    if data_config is not None and data_config.name in CLASSIFIER_DATASETS:
        return ["classifier"]
    return ["inception"]


def parse_feature_nets(text: str | None, data_config: ml_collections.ConfigDict | None) -> list[str]:
    if not text:
        return default_feature_nets(data_config)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FEATURE_NETS]
    if unknown or not names:
        raise UserError(f"--features={text}: use a comma-separated list of {', '.join(FEATURE_NETS)}")
    return names


def check_feature_net(name: str, *, data_config: ml_collections.ConfigDict | None,
                      inception_weights: str | None = None) -> None:
    """What ``make_feature_net`` needs, checked without loading or training anything, so that a
    job refuses before it samples or trains a classifier for minutes."""
    if name == "inception":
        from diffcorrupt.evaluation.inception_weights import default_weights_path, existing_weights

        existing_weights(inception_weights or default_weights_path())
    elif data_config is None or data_config.name not in CLASSIFIER_DATASETS:
        dataset = "unknown" if data_config is None else data_config.name
        raise UserError(f"--features=classifier needs samples of a run on {' or '.join(CLASSIFIER_DATASETS)} "
                        f"(these are of dataset '{dataset}'); use --features=inception")


def make_feature_net(name: str, *, data_config: ml_collections.ConfigDict | None,
                     inception_weights: str | None = None) -> FeatureNet:
    check_feature_net(name, data_config=data_config, inception_weights=inception_weights)
    if name == "inception":
        from diffcorrupt.evaluation.inception_weights import InceptionFeatures, default_weights_path, load_inception_params

        return InceptionFeatures(load_inception_params(inception_weights or default_weights_path()))
    from diffcorrupt.evaluation.classifier_training import ensure_classifier, load_classifier

    return load_classifier(ensure_classifier(data_config))
