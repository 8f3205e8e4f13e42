"""``config.data`` -> data source. One place knows every dataset name."""

from __future__ import annotations

import ml_collections

from diffcorrupt.config.loading import suggest
from diffcorrupt.data.sources.base import Source
from diffcorrupt.errors import ConfigError, DataError

NAMES = ("fashion_mnist", "captioned_shapes", "synthetic", "image_folder", "caption_folder", "latent_records")
TFDS_PREFIX = "tfds:"
_TEXT = ("captioned_shapes", "caption_folder")
_GENERATED = ("captioned_shapes", "synthetic")


def _check_name(name: str) -> None:
    if name not in NAMES and not name.startswith(TFDS_PREFIX):
        raise ConfigError(
            f"config key 'data.name' is '{name}'{suggest(name, NAMES)}; use one of {', '.join(NAMES)} "
            f"or {TFDS_PREFIX}<builder name>"
        )


def _check_size_key(data: ml_collections.ConfigDict) -> None:
    if data.num_examples and data.name not in _GENERATED:
        raise ConfigError(
            f"config key 'data.num_examples' is {data.num_examples}, but '{data.name}' has a fixed size; "
            f"leave it 0 (it sizes only the generated datasets {', '.join(_GENERATED)})"
        )


def _need_size(data: ml_collections.ConfigDict) -> int:
    if data.num_examples <= 0:
        raise ConfigError(f"config key 'data.num_examples' must be positive for the generated dataset '{data.name}'")
    return data.num_examples


def make_source(data: ml_collections.ConfigDict) -> Source:
    """Opens the configured dataset (split, folder or size as the config says), restricted to
    ``data.subset`` where that names one."""
    from diffcorrupt.data.sources.controls import with_controls
    from diffcorrupt.data.sources.subset import make_subset

    return with_controls(make_subset(_open(data), data.subset), data)


def _open(data: ml_collections.ConfigDict) -> Source:
    _check_name(data.name)
    _check_size_key(data)
    if data.name == "fashion_mnist":
        from diffcorrupt.data.sources.fashion_mnist import FashionMnistSource

        return FashionMnistSource(data.split, data.data_dir)
    if data.name == "captioned_shapes":
        from diffcorrupt.data.sources.captioned_shapes import CaptionedShapesSource

        # Each split is its own keyed stream, so 'test' examples are fresh draws, not copies of 'train'.
        offset_seed = {"train": 0, "test": 1}.get(data.split)
        if offset_seed is None:
            raise DataError(f"captioned_shapes has no split '{data.split}'; set data.split to 'train' or 'test'")
        return CaptionedShapesSource(_need_size(data), data.image_size, seed=offset_seed)
    if data.name == "synthetic":
        from diffcorrupt.data.sources.synthetic import SyntheticSource

        return SyntheticSource(_need_size(data), (data.image_size, data.image_size, data.channels))
    if data.name == "image_folder":
        from diffcorrupt.data.sources.folders import ImageFolderSource

        return ImageFolderSource(data.data_dir)
    if data.name == "caption_folder":
        from diffcorrupt.data.sources.folders import CaptionFolderSource

        return CaptionFolderSource(data.data_dir)
    if data.name == "latent_records":
        from diffcorrupt.data.sources.latent_records import make_latent_source

        return make_latent_source(data.data_dir)
    from diffcorrupt.data.sources.tfds_source import make_tfds_source

    return make_tfds_source(data.name[len(TFDS_PREFIX):], data.split, data.data_dir)


def condition_of(data: ml_collections.ConfigDict) -> str:
    """'class' or 'text', read from metadata where there is any, without loading examples."""
    _check_name(data.name)
    if data.name in _TEXT:
        return "text"
    if data.name == "latent_records":
        from diffcorrupt.data.sources.latent_records import read_meta

        return read_meta(data.data_dir)["condition"]
    if data.name.startswith(TFDS_PREFIX):
        from diffcorrupt.data.sources.tfds_source import open_builder, tfds_condition

        return tfds_condition(open_builder(data.name[len(TFDS_PREFIX):], data.data_dir))
    return "class"


def check_available(data: ml_collections.ConfigDict) -> None:
    """Raises ``DataError`` with the fix when the dataset cannot be opened; cheap where it can be."""
    _check_name(data.name)
    _check_size_key(data)
    if data.name == "fashion_mnist":
        from diffcorrupt.data.sources.fashion_mnist import locate

        locate(data.split, data.data_dir)
    elif data.name in ("captioned_shapes", "synthetic"):
        _need_size(data)
    elif data.name == "latent_records":
        from diffcorrupt.data.sources.latent_records import read_meta

        read_meta(data.data_dir)
    elif data.name.startswith(TFDS_PREFIX):
        from diffcorrupt.data.sources.tfds_source import open_builder

        open_builder(data.name[len(TFDS_PREFIX):], data.data_dir)
    else:
        make_source(data)
