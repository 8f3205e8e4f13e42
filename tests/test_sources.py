"""Data sources: Fashion-MNIST (Debian and embedded), captioned shapes, image/caption folders,
pre-encoded latent records, and prepared TFDS datasets."""

from __future__ import annotations

import gzip
import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from diffcorrupt.config.schema import base_config
from diffcorrupt.data.pipeline import make_dataset, make_iterator
from diffcorrupt.data.sources import fashion_mnist
from diffcorrupt.data.sources.captioned_shapes import (
    COLOURS, COUNTS, POSITIONS, SHAPES, SIZES, CaptionedShapesSource,
)
from diffcorrupt.data.sources.fashion_mnist import EMBEDDED_DIR, FashionMnistSource
from diffcorrupt.data.sources.folders import CaptionFolderSource, ImageFolderSource
from diffcorrupt.data.sources.latent_records import (
    LatentClassSource, LatentTextSource, make_latent_source, write_meta, write_shard,
)
from diffcorrupt.data.sources.registry import make_source
from diffcorrupt.errors import ConfigError, DataError


def pipeline_config(name: str, data_dir: str = "", image_size: int = 8, channels: int = 3, batch_size: int = 4):
    config = base_config()
    config.data.name = name
    config.data.data_dir = data_dir
    config.data.image_size = image_size
    config.data.channels = channels
    config.data.num_threads = 1
    config.data.prefetch = 2
    config.train.batch_size = batch_size
    return config


# --------------------------------------------------------------------------- Fashion-MNIST


def _debian_has_train() -> bool:
    return (fashion_mnist.DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file()


def test_fashion_mnist_train_split_size():
    source = FashionMnistSource("train")
    if _debian_has_train():
        assert len(source) == 60000 and not source.embedded
    else:
        assert len(source) == 10000 and source.embedded


def test_fashion_mnist_elements_and_labels():
    source = FashionMnistSource("test")
    assert len(source) == 10000
    labels = source.labels()
    assert labels.shape == (10000,)
    assert labels.min() >= 0 and labels.max() <= 9
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 1000))  # the test split is balanced
    for index in (0, 1, 4999, 9999):
        element = source[index]
        assert element["image"].dtype == np.uint8
        assert element["image"].shape == (28, 28, 1)
        assert isinstance(element["label"], int) and element["label"] == labels[index]
    assert source[0]["image"].max() > 0
    assert source.num_classes == 10 and len(source.class_names) == 10
    groups = source.default_groups()
    assert all(0 <= c < 10 for group in groups for c in group)


def test_fashion_mnist_embedded_fallback(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "not-installed")
    for split in ("train", "test"):
        source = FashionMnistSource(split, "")
        assert source.embedded is True
        assert len(source) == 10000
        assert source[0]["image"].shape == (28, 28, 1) and source[0]["image"].dtype == np.uint8
        assert 0 <= source[0]["label"] <= 9
    # the registry goes the same way
    config = pipeline_config("fashion_mnist")
    assert make_source(config.data).embedded is True


@pytest.mark.skipif(not (fashion_mnist.DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_embedded_fallback_is_the_real_test_split(monkeypatch, tmp_path):
    debian = FashionMnistSource("test")
    assert not debian.embedded
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    embedded = FashionMnistSource("test")
    assert embedded.embedded
    assert np.array_equal(debian.labels(), embedded.labels())
    for index in (0, 123, 9999):
        assert np.array_equal(debian[index]["image"], embedded[index]["image"])


def test_fashion_mnist_explicit_dir_without_files(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        FashionMnistSource("train", str(tmp_path))


def test_fashion_mnist_unknown_split():
    with pytest.raises(DataError, match="split"):
        FashionMnistSource("validation")


def _dir_with_labels(tmp_path: pathlib.Path, labels: bytes) -> pathlib.Path:
    folder = tmp_path / "fmnist"
    folder.mkdir()
    os.symlink(EMBEDDED_DIR / "t10k-images-idx3-ubyte.gz", folder / "t10k-images-idx3-ubyte.gz")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(labels)
    return folder


def test_fashion_mnist_cut_gzip_file(tmp_path):
    whole = (EMBEDDED_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()
    folder = _dir_with_labels(tmp_path, whole[: len(whole) // 2])
    with pytest.raises(DataError, match="truncated|not a readable gzip") as err:
        FashionMnistSource("test", str(folder))
    assert "t10k-labels-idx1-ubyte.gz" in str(err.value)


def test_fashion_mnist_truncated_idx_content(tmp_path):
    data = gzip.decompress((EMBEDDED_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    folder = _dir_with_labels(tmp_path, gzip.compress(data[:-100]))
    with pytest.raises(DataError, match="truncated"):
        FashionMnistSource("test", str(folder))


def test_fashion_mnist_not_an_idx_file(tmp_path):
    folder = _dir_with_labels(tmp_path, gzip.compress(b"hello world, not an IDX file"))
    with pytest.raises(DataError, match="IDX"):
        FashionMnistSource("test", str(folder))


# --------------------------------------------------------------------------- captioned shapes


def test_captioned_shapes_is_deterministic_per_index():
    a, b = CaptionedShapesSource(100, resolution=32), CaptionedShapesSource(100, resolution=32)
    for index in (0, 1, 57, 99):
        x, y = a[index], b[index]
        assert x["caption"] == y["caption"]
        assert np.array_equal(x["image"], y["image"])
        assert x["image"].dtype == np.uint8 and x["image"].shape == (32, 32, 3)
    other_seed = CaptionedShapesSource(100, resolution=32, seed=1)
    assert [a.caption(i) for i in range(20)] != [other_seed.caption(i) for i in range(20)]


def test_captioned_shapes_caption_names_what_the_image_shows():
    source = CaptionedShapesSource(300, resolution=64)
    colours, positions = list(COLOURS), list(POSITIONS)
    for index in range(0, 300, 7):
        element = source[index]
        count, size, colour, shape, position = (int(a) for a in element["attributes"])
        caption = element["caption"]
        assert caption == source.caption(index)
        words = caption.split()
        assert words[0] == COUNTS[count]
        assert words[1] == SIZES[size]
        assert words[2] == colours[colour]
        assert words[3].startswith(SHAPES[shape])
        assert words[3].endswith("s") == (count > 0)
        assert caption.endswith(POSITIONS[positions[position]][0])
        # the named colour is in the image, and sits in the named region
        image = element["image"]
        mask = np.all(image == np.asarray(COLOURS[colours[colour]], np.uint8), axis=-1)
        assert mask.sum() > 0, f"{caption!r}: its colour is not in the image"
        ys, xs = np.nonzero(mask)
        cx, cy = (xs.mean() + 0.5) / 64, (ys.mean() + 0.5) / 64
        name = positions[position]
        if name == "left":
            assert cx < 0.5
        elif name == "right":
            assert cx > 0.5
        elif name == "top":
            assert cy < 0.5
        elif name == "bottom":
            assert cy > 0.5
        else:
            assert abs(cx - 0.5) < 0.2 and abs(cy - 0.5) < 0.2


def test_captioned_shapes_images_differ_when_captions_differ():
    source = CaptionedShapesSource(64, resolution=32)
    elements = [source[i] for i in range(64)]
    for i in range(64):
        for j in range(i + 1, 64):
            if elements[i]["caption"] != elements[j]["caption"]:
                assert not np.array_equal(elements[i]["image"], elements[j]["image"]), (i, j)
    assert len({e["caption"] for e in elements}) > 40


def test_captioned_shapes_any_size():
    n = 10**9
    source = CaptionedShapesSource(n, resolution=16)
    assert len(source) == n
    for index in (n - 1, n // 2, 123_456_789):
        element = source[index]
        assert element["image"].shape == (16, 16, 3)
        assert element["caption"] == source.caption(index)
    config = pipeline_config("captioned_shapes")
    config.data.num_examples = n
    config.data.corruption.kind = "swap"
    config.data.corruption.ratio = 0.1
    batch = make_dataset(config)[10**6]
    assert batch["image"].shape == (4, 8, 8, 3)
    assert np.all((0 <= batch["index"]) & (batch["index"] < n))


# --------------------------------------------------------------------------- image and caption folders


def _save(path: pathlib.Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "classes"
    made = {}
    specs = {
        "zebra/a.png": ("RGB", (12, 10)),
        "zebra/b.jpg": ("RGB", (20, 9)),
        "ant/c.png": ("L", (7, 5)),
        "ant/d.png": ("RGBA", (9, 9)),
        "ant/e.bmp": ("P", (6, 8)),
    }
    for name, (mode, (width, height)) in specs.items():
        array = rng.integers(0, 256, (height, width, {"L": 1, "P": 1, "RGB": 3, "RGBA": 4}[mode]), dtype=np.uint8)
        image = Image.fromarray(array[..., 0] if mode in ("L", "P") else array, mode="L" if mode in ("L", "P") else mode)
        if mode == "P":
            image = image.convert("P")
        _save(root / name, image)
        made[name] = image
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    _save(root / ".hidden" / "x.png", Image.new("RGB", (4, 4)))
    return root, made


def test_image_folder_reads_classes_in_sorted_order(image_folder):
    root, made = image_folder
    source = ImageFolderSource(str(root))
    assert source.class_names == ["ant", "zebra"]
    assert source.num_classes == 2
    assert len(source) == 5
    assert source.labels().tolist() == [0, 0, 0, 1, 1]
    expected = ["ant/c.png", "ant/d.png", "ant/e.bmp", "zebra/a.png", "zebra/b.jpg"]
    for index, name in enumerate(expected):
        element = source[index]
        image = made[name]
        assert element["label"] == source.labels()[index]
        assert element["image"].dtype == np.uint8
        assert element["image"].shape == (image.height, image.width, 3)
        if not name.endswith(".jpg"):  # lossless formats keep their pixels
            assert np.array_equal(element["image"], np.asarray(image.convert("RGB")))


def test_image_folder_runs_through_the_pipeline(image_folder):
    root, _ = image_folder
    config = pipeline_config("image_folder", str(root), image_size=8, channels=1, batch_size=5)
    config.data.corruption.ratio = 0.4
    batch = make_dataset(config)[0]
    assert batch["image"].shape == (5, 8, 8, 1) and batch["image"].dtype == np.float32
    assert sorted(batch["index"].tolist()) == [0, 1, 2, 3, 4]
    assert int(np.sum(batch["corrupted"])) == 2


def test_image_folder_corrupt_image(image_folder):
    root, _ = image_folder
    (root / "ant" / "broken.png").write_bytes(b"\x89PNG this is not really a png")
    source = ImageFolderSource(str(root))
    broken = [i for i in range(len(source)) if source._files[i].name == "broken.png"]
    assert broken
    with pytest.raises(DataError, match="broken.png"):
        source[broken[0]]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="data_dir"):
        ImageFolderSource("")
    with pytest.raises(DataError, match="not a folder"):
        ImageFolderSource(str(tmp_path / "missing"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="no images"):
        ImageFolderSource(str(tmp_path))


@pytest.fixture
def caption_folder(tmp_path):
    root = tmp_path / "captioned"
    _save(root / "images" / "one.png", Image.new("RGB", (10, 6), (255, 0, 0)))
    _save(root / "two.png", Image.new("L", (5, 7), 128))
    _save(root / "three.jpg", Image.new("RGB", (16, 16), (0, 0, 255)))
    lines = [
        json.dumps({"file": "images/one.png", "caption": "a red rectangle"}),
        "",
        json.dumps({"file": "two.png", "caption": "a grey patch"}),
        json.dumps({"file": "three.jpg", "caption": "a blue square"}),
    ]
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_caption_folder(caption_folder):
    source = CaptionFolderSource(str(caption_folder))
    assert len(source) == 3
    assert source.condition == "text"
    captions = ["a red rectangle", "a grey patch", "a blue square"]
    shapes = [(6, 10, 3), (7, 5, 3), (16, 16, 3)]
    for index, (caption, shape) in enumerate(zip(captions, shapes)):
        element = source[index]
        assert element["caption"] == caption == source.caption(index)
        assert element["image"].shape == shape and element["image"].dtype == np.uint8
    assert np.all(source[0]["image"] == [255, 0, 0])
    assert np.all(source[1]["image"] == 128)


def test_caption_folder_through_the_pipeline(caption_folder):
    config = pipeline_config("caption_folder", str(caption_folder), image_size=4, channels=3, batch_size=3)
    config.data.corruption.kind = "swap"
    config.data.corruption.ratio = 0.7  # floor(2.1) = 2 -> one pair
    batch = make_dataset(config)[0]
    assert batch["image"].shape == (3, 4, 4, 3)
    assert int(np.sum(batch["corrupted"])) == 2
    assert np.array_equal(batch["caption"] != batch["clean_caption"], batch["corrupted"])


@pytest.mark.parametrize(
    "bad_line",
    ["{not json", json.dumps({"file": "two.png"}), json.dumps(["two.png", "caption"]), json.dumps("two.png")],
)
def test_caption_folder_bad_line_names_the_line(caption_folder, bad_line):
    listing = caption_folder / "captions.jsonl"
    lines = listing.read_text().splitlines()
    lines.insert(3, bad_line)  # becomes line 4 (line 2 is blank)
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 4\b"):
        CaptionFolderSource(str(caption_folder))


def test_caption_folder_errors(tmp_path, caption_folder):
    with pytest.raises(DataError, match="captions.jsonl"):
        CaptionFolderSource(str(tmp_path))
    (caption_folder / "captions.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no images"):
        CaptionFolderSource(str(caption_folder))


def test_caption_folder_missing_image(caption_folder):
    listing = caption_folder / "captions.jsonl"
    listing.write_text(listing.read_text() + json.dumps({"file": "gone.png", "caption": "nothing"}) + "\n")
    source = CaptionFolderSource(str(caption_folder))
    with pytest.raises(DataError, match="gone.png"):
        source[3]


# --------------------------------------------------------------------------- latent records


def _latents(n: int) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((n, 4, 4, 2)).astype(np.float32)


def _mirrored(latents: np.ndarray) -> np.ndarray:
    """Stand-ins for the encodings of the mirrored images: anything but the mirrored latents."""
    return 10.0 - latents


def _write_class_latents(directory: pathlib.Path, n: int = 10, split_at: int = 6, flips: bool = True,
                         **meta) -> np.ndarray:
    directory.mkdir(parents=True, exist_ok=True)
    latents = _latents(n)

    def record(i):
        return {"index": i, "latent": latents[i], "label": i % 3, **({"latent_flipped": _mirrored(latents[i])} if flips else {})}

    shards = ["latents-0.array_record", "latents-1.array_record"]
    written = write_shard(directory / shards[0], (record(i) for i in range(split_at)))
    written += write_shard(directory / shards[1], (record(i) for i in range(split_at, n)))
    assert written == n
    kwargs = dict(shards=shards, num_examples=n, latent_shape=(4, 4, 2), condition="class",
                  num_classes=3, class_names=["a", "b", "c"], flips=flips)
    kwargs.update(meta)
    write_meta(directory, **kwargs)
    return latents


def test_latent_records_class(tmp_path):
    latents = _write_class_latents(tmp_path / "lat")
    source = make_latent_source(str(tmp_path / "lat"))
    assert isinstance(source, LatentClassSource)
    assert len(source) == 10
    assert source.num_classes == 3 and source.class_names == ["a", "b", "c"]
    for i in range(10):
        element = source[i]
        assert element["latent"].shape == (4, 4, 2)
        np.testing.assert_array_equal(element["latent"], latents[i])
        assert element["label"] == i % 3
    assert source.labels().tolist() == [i % 3 for i in range(10)]


def test_latent_records_text(tmp_path):
    directory = tmp_path / "lat_text"
    directory.mkdir()
    latents = _latents(5)
    captions = [f"caption number {i}" for i in range(5)]
    write_shard(directory / "s0", ({"index": i, "latent": latents[i], "caption": captions[i]} for i in range(5)))
    write_meta(directory, shards=["s0"], num_examples=5, latent_shape=(4, 4, 2), condition="text")
    source = make_latent_source(str(directory))
    assert isinstance(source, LatentTextSource)
    assert source.condition == "text"
    for i in range(5):
        assert source[i]["caption"] == captions[i] == source.caption(i)
        np.testing.assert_array_equal(source[i]["latent"], latents[i])


def test_latent_records_through_the_pipeline(tmp_path):
    latents = _write_class_latents(tmp_path / "lat")
    config = pipeline_config("latent_records", str(tmp_path / "lat"), batch_size=5)
    config.data.corruption.ratio = 0.3
    config.data.corruption.prior = "uniform"
    ds = make_dataset(config)
    for k in range(4):
        batch = ds[k]
        assert batch["latent"].shape == (5, 4, 4, 2)
        for j, index in enumerate(batch["index"]):
            want = _mirrored(latents[int(index)]) if batch["flipped"][j] else latents[int(index)]
            np.testing.assert_array_equal(batch["latent"][j], want)
        assert np.array_equal(batch["clean_label"], batch["index"] % 3)
        assert "latent_flipped" not in batch


def test_latents_without_mirrored_encodings_refuse_random_flip(tmp_path):
    _write_class_latents(tmp_path / "lat", flips=False)
    config = pipeline_config("latent_records", str(tmp_path / "lat"), batch_size=5)
    with pytest.raises(ConfigError, match="encode --flips"):
        make_dataset(config)
    config.data.random_flip = False
    assert make_dataset(config)[0]["latent"].shape == (5, 4, 4, 2)


def test_latent_records_without_meta(tmp_path):
    directory = tmp_path / "lat"
    directory.mkdir()
    write_shard(directory / "latents-0.array_record", [{"index": 0, "latent": _latents(1)[0], "label": 0}])
    with pytest.raises(DataError, match="meta.json"):
        make_latent_source(str(directory))


def test_latent_records_missing_shard(tmp_path):
    directory = tmp_path / "lat"
    _write_class_latents(directory)
    (directory / "latents-1.array_record").unlink()
    with pytest.raises(DataError, match="latents-1.array_record"):
        make_latent_source(str(directory))


def test_latent_records_count_mismatch(tmp_path):
    directory = tmp_path / "lat"
    _write_class_latents(directory, num_examples=11)
    with pytest.raises(DataError, match="11"):
        make_latent_source(str(directory))


def test_latent_records_wrong_format(tmp_path):
    directory = tmp_path / "lat"
    _write_class_latents(directory)
    meta = json.loads((directory / "meta.json").read_text())
    meta["version"] = 999
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError):
        make_latent_source(str(directory))
    (directory / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="JSON"):
        make_latent_source(str(directory))


def test_latent_record_out_of_place(tmp_path):
    directory = tmp_path / "lat"
    directory.mkdir()
    latents = _latents(4)
    order = [0, 2, 1, 3]  # records 1 and 2 swapped
    write_shard(directory / "s0", ({"index": i, "latent": latents[i], "label": 0} for i in order))
    write_meta(directory, shards=["s0"], num_examples=4, latent_shape=(4, 4, 2), condition="class", num_classes=2)
    source = make_latent_source(str(directory))
    assert source[0]["label"] == 0 and source[3]["label"] == 0
    with pytest.raises(DataError, match="index"):
        source[1]
    with pytest.raises(DataError):
        source[2]


# --------------------------------------------------------------------------- TFDS




class DiffcorruptTinyClasses(tfds.core.GeneratorBasedBuilder):
    """20 random 8x8 RGB images with a 3-class label."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
            }),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20)}

    def _generate_examples(self, n):
        rng = np.random.default_rng(0)
        for i in range(n):
            yield i, {"image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "label": i % 3}


class DiffcorruptTinyCaptions(tfds.core.GeneratorBasedBuilder):
    """12 random 8x8 RGB images with a text caption."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "caption": tfds.features.Text(),
            }),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12)}

    def _generate_examples(self, n):
        rng = np.random.default_rng(1)
        for i in range(n):
            yield i, {"image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "caption": f"picture {i}"}


def _prepare(builder_class, data_dir: pathlib.Path, file_format: str = "array_record"):
    builder = builder_class(data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )
    return builder


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    _prepare(DiffcorruptTinyClasses, data_dir)
    _prepare(DiffcorruptTinyCaptions, data_dir)
    return data_dir


def test_tfds_class_source(tfds_dir):
    config = pipeline_config("tfds:" + DiffcorruptTinyClasses.name, str(tfds_dir))
    source = make_source(config.data)
    assert source.condition == "class"
    assert len(source) == 20
    assert source.num_classes == 3 and source.class_names == ["red", "green", "blue"]
    labels = source.labels()
    assert labels.shape == (20,) and labels.dtype == np.int64
    assert sorted(labels.tolist()) == sorted(i % 3 for i in range(20))
    for i in range(20):
        element = source[i]
        assert element["image"].shape == (8, 8, 3) and element["image"].dtype == np.uint8
        assert element["label"] == labels[i]


def test_tfds_pipeline(tfds_dir):
    config = pipeline_config("tfds:" + DiffcorruptTinyClasses.name, str(tfds_dir), image_size=8, channels=3, batch_size=4)
    config.data.corruption.ratio = 0.25
    source = make_source(config.data)
    ds = make_dataset(config)
    corrupted = 0
    for k in range(5):  # one epoch
        batch = ds[k]
        assert batch["image"].shape == (4, 8, 8, 3) and batch["image"].dtype == np.float32
        for j, index in enumerate(batch["index"]):
            raw = source[int(index)]["image"].astype(np.float32) / 127.5 - 1.0
            np.testing.assert_array_equal(batch["image"][j], raw[:, ::-1] if batch["flipped"][j] else raw)
            assert batch["clean_label"][j] == source[int(index)]["label"]
        corrupted += int(np.sum(batch["corrupted"]))
    assert corrupted == 5


def test_tfds_text_source(tfds_dir):
    config = pipeline_config("tfds:" + DiffcorruptTinyCaptions.name, str(tfds_dir), batch_size=4)
    source = make_source(config.data)
    assert source.condition == "text"
    assert len(source) == 12
    captions = [source[i]["caption"] for i in range(12)]
    assert sorted(captions) == sorted(f"picture {i}" for i in range(12))
    assert all(isinstance(c, str) for c in captions)
    assert [source.caption(i) for i in range(12)] == captions
    config.data.corruption.kind = "swap"
    config.data.corruption.ratio = 0.5
    batch = make_dataset(config)[0]
    assert np.array_equal(batch["caption"] != batch["clean_caption"], batch["corrupted"])


def test_tfds_unknown_split(tfds_dir):
    config = pipeline_config("tfds:" + DiffcorruptTinyClasses.name, str(tfds_dir))
    config.data.split = "validation"
    with pytest.raises(DataError, match="split"):
        make_source(config.data)


def test_tfds_unprepared_dataset(tmp_path):
    config = pipeline_config("tfds:mnist", str(tmp_path))
    with pytest.raises(DataError, match="tfds build") as err:
        make_source(config.data)
    assert "--file_format=array_record" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_tfds_unprepared_imagenet_names_the_manual_archives(tmp_path):
    config = pipeline_config("tfds:imagenet2012", str(tmp_path))
    with pytest.raises(DataError, match="tfds build imagenet2012") as err:
        make_source(config.data)
    assert "ILSVRC2012_img_train.tar" in str(err.value) and "--manual_dir" in str(err.value)


def test_tfds_unknown_dataset(tmp_path):
    config = pipeline_config("tfds:no_such_dataset_for_diffcorrupt", str(tmp_path))
    with pytest.raises(DataError, match="knows no dataset"):
        make_source(config.data)


def test_tfds_tfrecord_dataset_asks_for_a_rebuild(tmp_path):
    _prepare(DiffcorruptTinyClasses, tmp_path, file_format="tfrecord")
    config = pipeline_config("tfds:" + DiffcorruptTinyClasses.name, str(tmp_path))
    with pytest.raises(DataError, match="tfds build"):
        make_source(config.data)


@pytest.mark.parametrize("kind", ["tfds", "latent_records"])
def test_record_sources_work_in_worker_processes(kind, tfds_dir, tmp_path):
    """The sources are pickled into grain's worker processes and serve the same batches there."""
    if kind == "tfds":
        config = pipeline_config("tfds:" + DiffcorruptTinyClasses.name, str(tfds_dir), batch_size=4)
    else:
        _write_class_latents(tmp_path / "lat")
        config = pipeline_config("latent_records", str(tmp_path / "lat"), batch_size=2)
    config.data.corruption.ratio = 0.3
    config.data.corruption.prior = "uniform"
    iterators = []
    try:
        for num_workers in (0, 2):
            config.data.num_workers = num_workers
            iterators.append(make_iterator(config))
        for _ in range(3):
            plain, workers = (next(it) for it in iterators)
            assert sorted(plain) == sorted(workers)
            for key in plain:
                assert np.array_equal(plain[key], workers[key]), key
    finally:
        for it in iterators:
            it.close()


# --------------------------------------------------------------------------- registry


def test_unknown_dataset_name():
    config = pipeline_config("fashion_mnst")
    with pytest.raises(ConfigError, match="fashion_mnist"):
        make_source(config.data)
