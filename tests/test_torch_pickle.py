"""The restricted PyTorch reader: tensors come back exactly, and nothing in a file runs.

The files are written here opcode by opcode, without PyTorch; with PyTorch installed (it is not a
dependency) the reader is also checked against real ``torch.save`` and ``torch.jit.save`` output.
"""

import pickle
import struct
import zipfile

import numpy as np
import pytest

from diffcorrupt.errors import UserError
from diffcorrupt.weights.torch_pickle import load_state_dict


def _str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
    return b"J" + struct.pack("<i", value)


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _global(module, name):
    return f"c{module}\n{name}\n".encode()


def _dict(items):
    return b"}(" + b"".join(_str(key) + value for key, value in items) + b"u"


def _tensor(key, storage_type, numel, offset, size, stride):
    """What torch.save writes for a tensor: _rebuild_tensor_v2 of a persistent storage reference."""
    storage = _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel)) + b"Q"
    args = _tuple(
        storage,
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        b"\x89",  # requires_grad = False
        _global("collections", "OrderedDict") + b")R",
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _script_object(qualified_name, items):
    """What torch.jit.save writes for a module: NEWOBJ of a __torch__ class, then BUILD with its attributes."""
    module, name = qualified_name.rsplit(".", 1)
    return _global(module, name) + b")\x81" + _dict(items) + b"b"


def _pickle(body):
    return b"\x80\x02" + body + b"."


def _write_zip(path, data_pkl, storages):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())  # little endian, as torch writes
    return path


WEIGHT = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
COUNTS = np.arange(7, dtype=np.int64)


def _state_dict_pickle():
    return _pickle(
        _dict(
            [
                ("layer.weight", _tensor("0", "FloatStorage", 6, 0, (2, 3), (3, 1))),
                # A transposed view that starts one element into its storage.
                ("layer.counts", _tensor("1", "LongStorage", 7, 1, (3, 2), (1, 3))),
            ]
        )
    )


def test_state_dict_tensors_read_back_exactly(tmp_path):
    path = _write_zip(tmp_path / "model.pt", _state_dict_pickle(), {"0": WEIGHT, "1": COUNTS})
    tensors = load_state_dict(path)
    assert sorted(tensors) == ["layer.counts", "layer.weight"]
    np.testing.assert_array_equal(tensors["layer.weight"], WEIGHT)
    assert tensors["layer.weight"].dtype == np.float32
    np.testing.assert_array_equal(tensors["layer.counts"], COUNTS[1:].reshape(2, 3).T)


def test_torchscript_objects_are_inert_bags_named_by_attribute_path(tmp_path):
    conv = _script_object(
        "__torch__.model.Conv",
        [("training", b"\x89"), ("weight", _tensor("0", "FloatStorage", 6, 0, (2, 3), (3, 1))), ("stride", _int(2))],
    )
    net = _script_object("__torch__.model.Net", [("layers", _script_object("__torch__.model.Seq", [("conv", conv)]))])
    data_pkl = _pickle(_script_object("__torch__.wrap.Wrap", [("net", net)]))
    path = _write_zip(tmp_path / "jit.pt", data_pkl, {"0": WEIGHT})
    tensors = load_state_dict(path)
    assert list(tensors) == ["net.layers.conv.weight"]
    np.testing.assert_array_equal(tensors["net.layers.conv.weight"], WEIGHT)


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("subprocess", "call")])
def test_a_file_that_names_code_is_refused_and_nothing_runs(tmp_path, module, name):
    sentinel = tmp_path / "sentinel"
    command = f"open({str(sentinel)!r}, 'w')" if name == "eval" else f"touch {sentinel}"
    payload = _pickle(_global(module, name) + _tuple(_str(command)) + b"R")
    path = _write_zip(tmp_path / "evil.pt", payload, {})
    with pytest.raises(UserError, match=rf"refers to `{module}\.{name}`.*refusing to run code"):
        load_state_dict(path)
    assert not sentinel.exists()


def test_a_stride_past_the_storage_is_refused(tmp_path):
    # as_strided would read memory outside the storage; the reader checks the extent first.
    data_pkl = _pickle(_dict([("w", _tensor("0", "FloatStorage", 6, 0, (2, 3), (100, 1)))]))
    path = _write_zip(tmp_path / "bad.pt", data_pkl, {"0": WEIGHT})
    with pytest.raises(UserError, match="reaches past the end of its storage"):
        load_state_dict(path)


def test_truncated_missing_and_foreign_files_give_one_sentence(tmp_path):
    path = _write_zip(tmp_path / "model.pt", _state_dict_pickle(), {"0": WEIGHT, "1": COUNTS})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated"):
        load_state_dict(truncated)
    with pytest.raises(UserError, match="does not exist"):
        load_state_dict(tmp_path / "absent.pt")
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(UserError, match="not a PyTorch file"):
        load_state_dict(text)


def test_legacy_stream_format(tmp_path):
    """Before PyTorch 1.6: magic, protocol, sys info, the object, the storage keys, then each
    storage as an int64 element count and its bytes."""
    header = b"".join(
        pickle.dumps(value, protocol=2)
        for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    storages = b"".join(struct.pack("<q", array.size) + array.tobytes() for array in (WEIGHT, COUNTS))
    path = tmp_path / "legacy.pth"
    path.write_bytes(header + _state_dict_pickle() + pickle.dumps(["0", "1"], protocol=2) + storages)
    tensors = load_state_dict(path)
    np.testing.assert_array_equal(tensors["layer.weight"], WEIGHT)
    np.testing.assert_array_equal(tensors["layer.counts"], COUNTS[1:].reshape(2, 3).T)


def _torch_state_dict():
    torch = pytest.importorskip("torch", reason="torch is not installed (optional; install it to check real files)")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 3).half())
    state = model.state_dict()
    state["transposed"] = torch.arange(12).reshape(3, 4).t()
    return torch, model, state


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_real_torch_save(tmp_path, zip_format):
    torch, _, state = _torch_state_dict()
    path = tmp_path / "state.pt"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    tensors = load_state_dict(path)
    assert sorted(tensors) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(tensors[key], value.numpy(), err_msg=key)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_real_torch_jit_save(tmp_path):
    torch, model, _ = _torch_state_dict()
    path = tmp_path / "scripted.pt"
    torch.jit.script(model).save(str(path))
    tensors = load_state_dict(path)
    assert sorted(tensors) == sorted(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(tensors[key], value.numpy(), err_msg=key)


def test_training_checkpoint_extras_are_inert_stand_ins(tmp_path):
    """A Lightning checkpoint keys its callbacks by class, and DiT's train script pickles an
    argparse.Namespace: both read as inert objects, beside the tensors."""
    namespace = (_global("copyreg", "_reconstructor") + _tuple(_global("argparse", "Namespace"), _global("builtins", "object"),
                                                                 b"N") + b"R" + _dict([("model", _str("DiT-XL/2"))]) + b"b")
    callbacks = b"}(" + _global("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint") + _dict([]) + b"u"
    body = _dict([("state_dict", _dict([("w", _tensor("0", "FloatStorage", 6, 0, (2, 3), (3, 1)))])),
                  ("args", namespace), ("callbacks", callbacks)])
    path = _write_zip(tmp_path / "train.ckpt", _pickle(body), {"0": WEIGHT})
    np.testing.assert_array_equal(load_state_dict(path)["state_dict.w"], WEIGHT)
    # the stand-ins do not open a door: a real class through the same route is still refused
    evil = _global("copyreg", "_reconstructor") + _tuple(_global("subprocess", "Popen"), _global("builtins", "object"), b"N") + b"R"
    with pytest.raises(UserError, match="subprocess.Popen"):
        load_state_dict(_write_zip(tmp_path / "evil.ckpt", _pickle(evil), {}))
