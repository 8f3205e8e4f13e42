"""The readers of untrusted files against a corpus of hostile ones (``hostile_corpus``).

Every hostile file must be refused with one ``UserError`` sentence (one line of printable ASCII
that names the file), run no code (the sentinel folder stays empty, the reader's allowed globals
unchanged) and allocate no more than its size justifies (the peak that tracemalloc measures while
reading stays under ``_memory_bound``). Each category is read in one child process
(``hostile_runner``), because the failures being guarded against include segfaults and gigabyte
allocations. The importers, which hand such files to those readers, are checked in-process below.

Run: ``.venv/bin/python -m pytest -q tests/test_hostile_inputs.py`` (one category: ``-k zip``).
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from hostile_corpus import CASES, counts
from hostile_pickles import BUILD, REDUCE, TRUE, WEIGHT, dct, glob, plain_tensor, proto2, text, torch_zip, tup, valid_zip
from torch_files import state_dict_file

from diffcorrupt.errors import UserError
from diffcorrupt.weights import torch_pickle

HOSTILE_FILES = counts()  # hostile files per category
RUNNER = pathlib.Path(__file__).with_name("hostile_runner.py")
_results: dict[str, dict[str, dict]] = {}


def _memory_bound(size: int) -> int:
    """What reading ``size`` bytes of input may allocate: 8 MiB of bookkeeping (Pillow's plugins
    load on first use) and 8 bytes per byte, which covers the file, its storages and the objects its
    pickle builds, but never what a header, a length or a stride merely claims."""
    return (8 << 20) + 8 * size


def _size(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _read_in_child(jobs: list[dict]) -> dict[str, dict]:
    """Runs ``hostile_runner`` on ``jobs``; a job during which the child dies is reported as a crash
    and the child is started again on the rest."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    results: dict[str, dict] = {}
    while jobs:
        done = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(jobs), capture_output=True, text=True,
                              env=env, cwd=RUNNER.parent.parent, timeout=600)
        for line in done.stdout.splitlines():
            result = json.loads(line)
            results[result["id"]] = result
        jobs = [job for job in jobs if job["id"] not in results]
        if jobs:
            results[jobs[0]["id"]] = {"outcome": f"crash (exit status {done.returncode})", "message": done.stderr[-2000:]}
            jobs = jobs[1:]
    return results


def _category(category: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every case of ``category``, written and read once by each xdist worker that needs it."""
    if category not in _results:
        _results[category] = _read_category(category, tmp_path_factory.mktemp(f"hostile-{category}"))
    return _results[category]


def _read_category(category: str, base: pathlib.Path) -> dict[str, dict]:
    jobs = []
    for case in (c for c in CASES if c.category == category):
        folder, sentinels = base / case.name / "case", base / case.name / "sentinels"
        folder.mkdir(parents=True)
        sentinels.mkdir()
        path = case.make(folder, sentinels)
        jobs.append({"id": case.id, "reader": case.reader, "path": str(path), "sentinels": str(sentinels),
                     "size": _size(path)})
    results = _read_in_child(jobs)
    for job in jobs:
        results[job["id"]]["size"] = job["size"]
    return results


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_file_is_refused_in_one_sentence_without_running_code(case, tmp_path_factory):
    result = _category(case.category, tmp_path_factory)[case.id]
    assert result["outcome"] == "UserError", result
    message = result["message"]
    assert message.isascii() and message.isprintable() and len(message) <= 500, message
    assert f"/{case.name}/case" in message, message  # it names the file (or the folder's entry)
    assert result["sentinels"] == [] and not result["tampered"], result
    assert result["peak"] <= _memory_bound(result["size"]), (result["peak"], result["size"], message)


def test_the_corpus_covers_every_category():
    assert set(HOSTILE_FILES) == {"code", "build", "persistent", "storage", "zip", "nesting", "truncation", "resource",
                                  "names", "samples", "images", "captions"}
    assert min(HOSTILE_FILES.values()) >= 5 and sum(HOSTILE_FILES.values()) >= 300
    routes = {case.name.rsplit("-via-", 1)[1] for case in CASES if case.category == "code"}
    assert routes == {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


# --- in-process: what the refusals leave behind, and what still loads ------------------------------

def test_build_cannot_change_the_readers_objects_for_later_loads(tmp_path):
    """BUILD aimed at an allowed global is refused, and the next file reads as it would have."""
    for name, target in {"device": glob("torch", "device"), "OrderedDict": glob("collections", "OrderedDict"),
                         "rebuild": glob("torch._utils", "_rebuild_tensor_v2")}.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(torch_zip(proto2(target + dct((text("_function"), glob("torch", "device")),
                                                       (text("pwned"), TRUE)) + BUILD)))
        with pytest.raises(UserError, match="BUILD to change the reader's allowed globals"):
            torch_pickle.load_state_dict(path)
    for value in torch_pickle._ALLOWED.values():
        assert not hasattr(value, "pwned") and not hasattr(value, "__dict__") or value is object
    path = tmp_path / "valid.pt"
    path.write_bytes(valid_zip())
    tensors = torch_pickle.load_state_dict(path)
    np.testing.assert_array_equal(tensors["layer.weight"], np.frombuffer(WEIGHT, np.float32).reshape(2, 3))
    assert not tensors["layer.weight"].flags.writeable  # a view of the storage, not a copy


def test_nesting_within_the_limit_still_loads(tmp_path):
    """900 nested lists around a tensor read back, by a walk that does not recurse."""
    body = b"]" * 900 + plain_tensor() + b"a" * 900
    path = tmp_path / "deep.pt"
    path.write_bytes(torch_zip(proto2(body), {"0": WEIGHT}))
    tensors = torch_pickle.load_state_dict(path)
    assert list(tensors) == [".".join(["0"] * 900)]


# --- importers: they hand these files to the readers, and check what the readers cannot -------------

def _one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message.isascii() and message.isprintable() and len(message) <= 500, message
    return message


def _hostile_pt(path: pathlib.Path, sentinels: pathlib.Path) -> pathlib.Path:
    """A weights file whose pickle would run ``touch`` if it were unpickled by torch.load."""
    sentinels.mkdir()
    path.write_bytes(torch_zip(proto2(glob("os", "system") + tup(text(f"touch {sentinels / 'ran'}")) + REDUCE)))
    return path


def test_a_released_dit_layout_still_imports_exactly(tmp_path):
    """The geometry checks pass a real layout: random DiT-T/2 weights in the original's names."""
    import flax.linen as nn
    import jax

    from diffcorrupt.checkpoint_import.dit_names import facebook_rules, to_source
    from diffcorrupt.checkpoint_import.dit_sources import read_dit
    from diffcorrupt.models.layers import sincos_2d
    from diffcorrupt.models.registry import example_inputs, make_model

    model = make_model("DiT-T/2", input_shape=(8, 8, 4), num_classes=10, learned_sigma=True)
    abstract = nn.meta.unbox(jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, *example_inputs(model, (8, 8, 4)))["params"]))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: rng.standard_normal(leaf.shape).astype(np.float32), abstract)
    tensors = {**to_source(params, facebook_rules(model.depth)), "pos_embed": sincos_2d(192, 4)[None]}
    imported = read_dit(state_dict_file(tmp_path / "DiT-T-2.pt", tensors))
    assert (imported.model_name, imported.input_shape, imported.num_classes) == ("DiT-T/2", (8, 8, 4), 10)
    for ours, theirs in zip(jax.tree.leaves(imported.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(ours, theirs)


def test_a_deflated_torch_file_still_loads(tmp_path):
    """torch.save stores its members; a file re-packed with deflate reads the same."""
    path = tmp_path / "deflated.pt"
    path.write_bytes(torch_zip(proto2(dct((text("w"), plain_tensor()))), {"0": WEIGHT}, compression=zipfile.ZIP_DEFLATED))
    np.testing.assert_array_equal(torch_pickle.load_state_dict(path)["w"], np.frombuffer(WEIGHT, np.float32).reshape(2, 3))


DIT_T2 = {"x_embedder.proj.weight": (192, 4, 2, 2), "final_layer.linear.weight": (32, 192),
          "y_embedder.embedding_table.weight": (11, 192), "pos_embed": (1, 16, 192)}
DIT_FORGERIES = {
    "patch_0": {"x_embedder.proj.weight": (192, 4, 0, 0)},  # divided by zero before
    "patch_3": {"x_embedder.proj.weight": (192, 4, 3, 3)},
    "non_square_patch": {"x_embedder.proj.weight": (192, 4, 2, 4)},
    "three_axis_patch_embedding": {"x_embedder.proj.weight": (192, 4, 2)},
    "no_hidden_width": {"x_embedder.proj.weight": (0, 4, 2, 2)},
    "final_rows_not_a_patch_multiple": {"final_layer.linear.weight": (30, 192)},
    "one_row_class_table": {"y_embedder.embedding_table.weight": (1, 192)},
    "one_axis_class_table": {"y_embedder.embedding_table.weight": (11,)},
    "one_axis_positions": {"pos_embed": (192,)},
    "width_not_a_multiple_of_4": {"x_embedder.proj.weight": (190, 4, 2, 2), "pos_embed": (1, 16, 190)},
}


@pytest.mark.parametrize("forgery", list(DIT_FORGERIES), ids=list(DIT_FORGERIES))
def test_dit_import_refuses_wrong_geometry_in_one_sentence(forgery, tmp_path):
    from diffcorrupt.checkpoint_import.dit_sources import read_dit

    path = state_dict_file(tmp_path / "dit.pt", {**DIT_T2, **DIT_FORGERIES[forgery]})
    with pytest.raises(UserError) as error:
        read_dit(path)
    assert str(path) in _one_sentence(error)


DIFFUSERS_CONFIG = {"norm_type": "ada_norm_zero", "patch_size": 2, "num_embeds_ada_norm": 10, "num_attention_heads": 3,
                    "attention_head_dim": 64, "num_layers": 6, "sample_size": 8, "in_channels": 4, "out_channels": 8}
CONFIG_FORGERIES = {"not_json": b"{norm_type: ada", "a_list": b"[1, 2]", "heads_as_text": {"num_attention_heads": "3"},
                    "patch_3": {"patch_size": 3}, "sample_not_divisible": {"sample_size": 7},
                    "no_layers": {"num_layers": -6}, "float_width": {"attention_head_dim": 64.5}}


@pytest.mark.parametrize("forgery", list(CONFIG_FORGERIES), ids=list(CONFIG_FORGERIES))
def test_diffusers_dit_import_refuses_a_forged_config_in_one_sentence(forgery, tmp_path):
    from diffcorrupt.checkpoint_import.dit_sources import read_dit

    change = CONFIG_FORGERIES[forgery]
    config = change if isinstance(change, bytes) else json.dumps({**DIFFUSERS_CONFIG, **change}).encode()
    (tmp_path / "config.json").write_bytes(config)
    with pytest.raises(UserError) as error:
        read_dit(tmp_path)
    assert "config.json" in _one_sentence(error)


def _importers() -> dict:
    """Every importer's entry point, as (folder with a hostile weights file) -> anything."""
    from diffcorrupt.autoencoders.convert import import_compvis
    from diffcorrupt.checkpoint_import import ldm_sources
    from diffcorrupt.checkpoint_import.dit_sources import read_dit
    from diffcorrupt.evaluation.inception_weights import load_inception_params

    def diffusers_dit(folder: pathlib.Path, weights: str) -> object:
        (folder / "config.json").write_text(json.dumps(DIFFUSERS_CONFIG))
        (folder / weights).rename(folder / ("diffusion_pytorch_model" + pathlib.Path(weights).suffix))
        return read_dit(folder)

    return {
        "dit_facebook": lambda folder, weights: read_dit(folder / weights),
        "dit_diffusers": diffusers_dit,
        "ldm_unet_weights": lambda folder, weights: ldm_sources._weights(folder, (weights,)),
        "autoencoder_compvis": lambda folder, weights: import_compvis(folder / weights, "kl-f4-small"),
        "inception": lambda folder, weights: load_inception_params(folder / weights),
    }


@pytest.mark.parametrize("importer", ["dit_facebook", "dit_diffusers", "ldm_unet_weights", "autoencoder_compvis",
                                      "inception"])
def test_importers_refuse_a_file_that_would_run_code(importer, tmp_path):
    _hostile_pt(tmp_path / "weights.bin", tmp_path / "sentinels")
    with pytest.raises(UserError) as error:
        _importers()[importer](tmp_path, "weights.bin")
    assert "refusing to run code" in _one_sentence(error)
    assert not any((tmp_path / "sentinels").iterdir())


@pytest.mark.parametrize("importer", ["dit_diffusers", "ldm_unet_weights"])
def test_importers_refuse_a_forged_safetensors_file(importer, tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}).encode()
    (tmp_path / "weights.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(UserError) as error:
        _importers()[importer](tmp_path, "weights.safetensors")
    assert "safetensors" in _one_sentence(error)
