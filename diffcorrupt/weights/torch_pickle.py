"""Read the tensors of a PyTorch file without PyTorch and without running code from the file.

A PyTorch file is a pickle, and unpickling can call any importable function, so ``torch.load`` on
a downloaded file runs whatever it names. This reader allows only the handful of globals that plain
tensors need (the tensor rebuild helpers, the storage types, ``collections.OrderedDict``, the list
builders of TorchScript) and turns every TorchScript class (``__torch__.*``), and the Lightning
callbacks and ``argparse.Namespace`` that training checkpoints carry beside their tensors, into an
inert object that just records its attributes; any other global is refused with a ``UserError``.

Three layouts are read:

- ``torch.save`` since PyTorch 1.6: a zip with ``<root>/data.pkl`` and the raw bytes of each
  storage in ``<root>/data/<key>``;
- ``torch.jit.save`` (TorchScript): the same zip layout, where ``data.pkl`` holds the module tree
  as ``__torch__.*`` objects; the tensors in their attributes are the module's parameters;
- the legacy stream of ``torch.save`` before 1.6 (and with ``_use_new_zipfile_serialization=False``):
  a few pickles one after another, followed by the storages' bytes.
"""

from __future__ import annotations

import collections
import io
import pathlib
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from diffcorrupt.errors import UserError

# Storage type name -> element type (little endian; a big-endian file flips it).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}

# The legacy stream starts with this number, pickled.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class TorchScriptObject:
    """An inert stand-in for an instance of a TorchScript class (``__torch__.*``).

    Unpickling creates it without arguments and hands it its state; it keeps the state (for a
    module, the dict of its attributes: submodules, tensors, ints) and does nothing else.
    """

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StorageType:
    """What a ``torch.*Storage`` global unpickles to: only its element type matters here."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _Storage:
    """One storage: its element type and count, and its bytes once they have been read."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None


class _TensorRef:
    """A tensor waiting for its storage's bytes (the legacy stream stores them after the pickle)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self, path: pathlib.Path) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise UserError(f"{path} lacks the bytes of a storage that one of its tensors uses; the file is damaged")
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=self.storage.dtype)
        # Strides come from the file: check them so that as_strided cannot read outside the storage.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or any(s < 0 for s in self.stride) or last >= flat.size:
            raise UserError(f"{path} has a tensor that reaches past the end of its storage; the file is damaged")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], self.size, tuple(s * flat.itemsize for s in self.stride), writeable=False
        )
        return np.array(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


def _identity(value: Any, *_: Any) -> Any:
    return value


def _device(*args: Any) -> str:
    return ":".join(str(a) for a in args)


def _reconstruct(cls: type, base: type, state: Any) -> Any:
    """``copyreg._reconstructor`` (how plain Python objects such as ``argparse.Namespace`` pickle),
    for the inert stand-ins only: a real class never gets this far, find_class refuses it first."""
    if not (isinstance(cls, type) and issubclass(cls, TorchScriptObject)) or base is not object:
        raise UserError(f"a pickle rebuilds {cls!r} from {base!r}, which a weights file has no reason to do")
    return cls()


# Classes whose instances (or the class objects themselves) sit in training checkpoints beside the
# tensors: Lightning's callbacks (keys of its "callbacks" dict) and the argparse.Namespace of DiT's
# train script. They come back as inert stand-ins that hold their state and run nothing.
_INERT_MODULES = ("__torch__.", "pytorch_lightning.", "lightning.", "lightning_fabric.")
_INERT_CLASSES = {("argparse", "Namespace")}

_ALLOWED = {
    ("copyreg", "_reconstructor"): _reconstruct,
    ("builtins", "object"): object,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "device"): _device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch.jit._pickle", f"build_{kind}list"): _identity for kind in ("int", "float", "bool", "double", "tensor")},
    ("torch.jit._pickle", "restore_type_tag"): _identity,
}


class _Unpickler(pickle.Unpickler):
    """Resolves only allowlisted globals; storages come back as ``_Storage`` records to fill."""

    def __init__(self, file: io.BufferedIOBase, path: pathlib.Path, byteorder: str):
        super().__init__(file)
        self.path = path
        self.byteorder = byteorder
        self.storages: dict[str, _Storage] = {}
        self.views: list[tuple[_Storage, str, int]] = []

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            dtype = _STORAGE_DTYPES[name]
            return _StorageType(dtype.newbyteorder(self.byteorder) if dtype.itemsize > 1 else dtype)
        if module.startswith(_INERT_MODULES) or module == "__torch__" or (module, name) in _INERT_CLASSES:
            return _script_class(f"{module}.{name}")
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UserError(
            f"{self.path} refers to `{module}.{name}`, which a weights file has no reason to contain; "
            "refusing to run code from it"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UserError(f"{self.path} has a persistent reference {pid!r:.80} that is not a tensor storage")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        view = pid[5] if len(pid) > 5 else None
        root = self.storages.setdefault(key, _Storage(storage_type.dtype, numel))
        if view is None:
            return root
        # Legacy files may store a view of a storage: (view key, offset in elements, view size).
        view_key, offset, view_numel = view
        if str(view_key) not in self.storages:
            self.storages[str(view_key)] = _Storage(storage_type.dtype, int(view_numel))
            self.views.append((self.storages[str(view_key)], key, int(offset)))
        return self.storages[str(view_key)]


_script_classes: dict[str, type] = {}


def _script_class(qualified_name: str) -> type:
    if qualified_name not in _script_classes:
        _script_classes[qualified_name] = type(
            qualified_name.rsplit(".", 1)[-1], (TorchScriptObject,), {"qualified_name": qualified_name}
        )
    return _script_classes[qualified_name]


def _unpickle(unpickler: _Unpickler) -> Any:
    try:
        return unpickler.load()
    except UserError:
        raise
    except Exception as error:  # a malformed pickle can fail in many ways; all mean a damaged file
        raise UserError(
            f"{unpickler.path} is not a readable PyTorch file ({type(error).__name__}: {error}); "
            "download it again"
        ) from None


def _read_zip(path: pathlib.Path) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_zip_archive(archive, path)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise UserError(f"{path} is a damaged zip file ({error}); download it again") from None


def _read_zip_archive(archive: zipfile.ZipFile, path: pathlib.Path) -> Any:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pickles:
        raise UserError(f"{path} is a zip file but not a PyTorch file (it has no <root>/data.pkl); check the path")
    root = pickles[0].split("/")[0]
    names = set(archive.namelist())
    byteorder = "<"
    if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder").strip() == b"big":
        byteorder = ">"
    unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])), path, byteorder)
    tree = _unpickle(unpickler)
    for key, storage in unpickler.storages.items():
        member = f"{root}/data/{key}"
        if member not in names:
            raise UserError(f"{path} lacks the storage {member} that its data.pkl refers to; the file is damaged")
        storage.array = _storage_array(archive.read(member), storage, path)
    return tree


def _storage_array(data: bytes, storage: _Storage, path: pathlib.Path) -> np.ndarray:
    nbytes = storage.numel * storage.dtype.itemsize
    if len(data) < nbytes:
        raise UserError(
            f"{path} has a storage of {len(data)} bytes where {nbytes} were expected; the file is truncated"
        )
    return np.frombuffer(data, dtype=storage.dtype, count=storage.numel)


def _read_legacy(path: pathlib.Path) -> Any:
    stream = io.BytesIO(path.read_bytes())
    header = _Unpickler(stream, path, "<")
    if _unpickle(header) != _LEGACY_MAGIC:
        raise UserError(f"{path} is neither a zip nor a legacy PyTorch file; check the path or download it again")
    _unpickle(header)  # protocol version
    sys_info = _unpickle(header)
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    unpickler = _Unpickler(stream, path, byteorder)
    tree = _unpickle(unpickler)
    keys = _unpickle(unpickler)
    for key in keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise UserError(f"{path} lists a storage {key} that none of its tensors uses; the file is damaged")
        head = stream.read(8)
        if len(head) < 8:
            raise UserError(f"{path} ends before the storage {key}; the file is truncated")
        numel = struct.unpack("<q", head)[0]
        storage.numel = numel
        storage.array = _storage_array(stream.read(numel * storage.dtype.itemsize), storage, path)
    for view, root_key, offset in unpickler.views:
        root = unpickler.storages[root_key].array
        if root is not None:
            view.array = root[offset : offset + view.numel]
    return tree


def load_tree(path: str | pathlib.Path) -> Any:
    """The unpickled object of a PyTorch file, with tensors as numpy arrays and TorchScript
    objects as ``TorchScriptObject``s (their attributes in ``.state``)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; check the path")
    if zipfile.is_zipfile(path):
        tree = _read_zip(path)
    else:
        with path.open("rb") as file:
            start = file.read(2)
        if start[:1] != b"\x80":
            raise UserError(
                f"{path} is not a PyTorch file (neither a complete zip nor a pickle); "
                "it may be truncated, so download it again"
            )
        tree = _read_legacy(path)
    return _materialise(tree, path, {})


def _materialise(obj: Any, path: pathlib.Path, seen: dict[int, Any]) -> Any:
    """Replaces tensor references by arrays, walking dicts, lists, tuples and script objects."""
    if id(obj) in seen:
        return seen[id(obj)]
    if isinstance(obj, _TensorRef):
        result = seen[id(obj)] = obj.materialise(path)
    elif isinstance(obj, dict):
        result = seen[id(obj)] = obj
        for key in list(obj):
            obj[key] = _materialise(obj[key], path, seen)
    elif isinstance(obj, list):
        result = seen[id(obj)] = obj
        obj[:] = [_materialise(item, path, seen) for item in obj]
    elif isinstance(obj, tuple):
        result = seen[id(obj)] = tuple(_materialise(item, path, seen) for item in obj)
    elif isinstance(obj, TorchScriptObject):
        result = seen[id(obj)] = obj
        obj.state = _materialise(getattr(obj, "state", None), path, seen)
    else:
        result = obj
    return result


def load_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor in a PyTorch file, by dotted name: the keys of a ``state_dict`` as saved, or for
    a TorchScript module the attribute path of each tensor (``net.layers.conv.weight``).

    Raises ``UserError`` for a missing, truncated or foreign file, and for a file whose pickle names
    any global outside the allowlist (nothing from such a file is executed).
    """
    tensors: dict[str, np.ndarray] = {}
    _flatten(load_tree(path), "", tensors, set())
    return tensors


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray], visiting: set[int]) -> None:
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
        return
    if id(obj) in visiting:  # a shared submodule is listed under its first name only
        return
    if isinstance(obj, TorchScriptObject):
        visiting.add(id(obj))
        _flatten(getattr(obj, "state", None), prefix, out, visiting)
    elif isinstance(obj, dict):
        visiting.add(id(obj))
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out, visiting)
    elif isinstance(obj, (list, tuple)):
        visiting.add(id(obj))
        for index, value in enumerate(obj):
            _flatten(value, f"{prefix}.{index}" if prefix else str(index), out, visiting)
