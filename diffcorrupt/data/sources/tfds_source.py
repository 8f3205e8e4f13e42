"""Any prepared TFDS dataset, read through ``tfds.data_source`` (random access, no tf.data).

TFDS must have prepared the dataset in the ArrayRecord file format; ImageNet additionally needs its
archives downloaded by hand, which is why a missing dataset is answered with the commands to run.
"""

from __future__ import annotations

import functools

import numpy as np

from diffcorrupt.data.sources.base import ClassSource, Element, TextSource
from diffcorrupt.errors import DataError

_LABEL_CHUNK = 4096


def _prepare_hint(name: str, data_dir: str) -> str:
    where = f" --data_dir={data_dir}" if data_dir else ""
    manual = (
        " (ImageNet: first put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in a folder and add "
        "--manual_dir=<that folder>)" if name.startswith("imagenet") else ""
    )
    return f"prepare it with `tfds build {name} --file_format=array_record{where}`{manual}"


def open_builder(name: str, data_dir: str = ""):
    """The TFDS builder of a prepared ArrayRecord dataset, or one sentence saying how to prepare it."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"TFDS knows no dataset '{name}'; check data.name (tfds:<builder name>, e.g. tfds:imagenet2012)") from None
    if not builder.is_prepared():
        raise DataError(f"TFDS dataset '{name}' is not prepared in '{builder.data_dir}'; {_prepare_hint(name, data_dir)}")
    if str(builder.info.file_format.value) != "array_record":
        raise DataError(
            f"TFDS dataset '{name}' was prepared as {builder.info.file_format.value}, which has no random access; "
            f"rebuild it: {_prepare_hint(name, data_dir)}"
        )
    return builder


def tfds_condition(builder) -> str:
    features = builder.info.features
    if "label" in features:
        return "class"
    if "caption" in features:
        return "text"
    raise DataError(
        f"TFDS dataset '{builder.name}' has neither a 'label' nor a 'caption' feature; "
        "use a dataset with one of them, or an image/caption folder"
    )


def make_tfds_source(name: str, split: str, data_dir: str = "") -> ClassSource | TextSource:
    builder = open_builder(name, data_dir)
    if split not in builder.info.splits:
        raise DataError(f"TFDS dataset '{name}' has no split '{split}'; set data.split to one of {', '.join(builder.info.splits)}")
    if tfds_condition(builder) == "class":
        return TfdsClassSource(builder, split)
    return TfdsTextSource(builder, split)


class _TfdsReader:
    def __init__(self, builder, split: str):
        import tensorflow_datasets as tfds

        self._source = tfds.data_source(builder.name, split=split, data_dir=builder.data_dir_root, download=False)
        self._builder = builder
        self._split = split

    @functools.cached_property
    def _skip_images(self):
        """The same records with the images left encoded, for label and caption reads."""
        import tensorflow_datasets as tfds

        return tfds.data_source(
            self._builder.name, split=self._split, data_dir=self._builder.data_dir_root, download=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )

    def __len__(self) -> int:
        return len(self._source)

    def _image(self, record) -> np.ndarray:
        image = np.asarray(record["image"])
        return image if image.ndim == 3 else image[..., None]


class TfdsClassSource(_TfdsReader, ClassSource):
    def __init__(self, builder, split: str):
        super().__init__(builder, split)
        label = builder.info.features["label"]
        self.num_classes = label.num_classes
        self.class_names = list(label.names)

    def __getitem__(self, index: int) -> Element:
        record = self._source[index]
        return {"image": self._image(record), "label": int(record["label"])}

    def labels(self) -> np.ndarray:
        """All labels, read in chunks with the images left undecoded."""
        source = self._skip_images
        out = np.empty(len(source), np.int64)
        for start in range(0, len(source), _LABEL_CHUNK):
            records = source.__getitems__(range(start, min(len(source), start + _LABEL_CHUNK)))
            out[start:start + len(records)] = [r["label"] for r in records]
        return out


class TfdsTextSource(_TfdsReader, TextSource):
    def __getitem__(self, index: int) -> Element:
        record = self._source[index]
        return {"image": self._image(record), "caption": _text(record["caption"])}

    def caption(self, index: int) -> str:
        return _text(self._skip_images[index]["caption"])


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
