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

Beyond the allowlist, nothing from the file is trusted: every pickle is walked opcode by opcode
before it is unpickled (``pickle_scan``: lengths, memo slots, nesting), zip members are read within
budgets set by the file's size (``torch_zip``), every storage reference, size, stride and offset is
checked, and tensors come back as read-only views of their storage's bytes, so a file cannot make
the reader allocate more than the storages it holds. What the file's opcodes can touch (the allowed
callables, the storage records) refuses pickle's BUILD, so a file cannot change them either. Any
failure, during or after unpickling, is one ``UserError`` sentence that names the file.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import pathlib
import pickle
import re
import struct
import zipfile
from typing import Any, Callable, Iterator

import ml_dtypes
import numpy as np

from diffcorrupt.errors import UserError
from diffcorrupt.weights.pickle_scan import MAX_DEPTH, Refused, scan_pickle, shown
from diffcorrupt.weights.torch_zip import MemberReader

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
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")  # torch writes "0", "1", ... (legacy: a decimal address)
_MAX_DIMS = 64  # numpy's limit, and far past any tensor's
_MAX_EXTENT = 1 << 62  # no size, stride or offset of a real tensor comes near


class _Inert:
    """What the file's opcodes can reach: no instance dict, and pickle's BUILD (which would set
    attributes that outlive the load) is refused."""

    __slots__ = ()
    what = ""  # how a message names it

    def __setstate__(self, state: Any) -> None:
        raise Refused(f"uses pickle BUILD to change the reader's {self.what}, which no weights file does; "
                      "refusing to read it")


class TorchScriptObject:
    """An inert stand-in for an instance of a TorchScript class (``__torch__.*``).

    Unpickling creates it without arguments and hands it its state; it keeps the state (for a
    module, the dict of its attributes: submodules, tensors, ints) and does nothing else. Its
    classes are made per load, so nothing a file does to one reaches another load.
    """

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StorageType(_Inert):
    """What a ``torch.*Storage`` global unpickles to: only its element type matters here."""

    __slots__ = ("dtype",)
    what = "storage type"

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _Storage(_Inert):
    """One storage: its element type and count, and its bytes once they have been read."""

    __slots__ = ("dtype", "numel", "array")
    what = "storage record"

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.array = dtype, numel, None


class _TensorRef(_Inert):
    """A tensor waiting for its storage's bytes (the legacy stream stores them after the pickle)."""

    __slots__ = ("storage", "offset", "size", "stride")
    what = "tensor record"

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> np.ndarray:
        """A read-only view of the storage; the extent is checked first, so as_strided cannot read
        outside the storage, and a tensor may not hold more elements than its storage (a zero
        stride over one element would otherwise become gigabytes downstream)."""
        flat = self.storage.array
        if flat is None:
            raise Refused("lacks the bytes of a storage that one of its tensors uses; the file is damaged")
        count = math.prod(self.size)
        if count == 0:
            if self.offset > flat.size or math.prod(n for n in self.size if n) * flat.itemsize >= _MAX_EXTENT:
                raise Refused("has an empty tensor that reaches past the end of its storage; the file is damaged")
            return np.zeros(self.size, flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= flat.size:
            raise Refused("has a tensor that reaches past the end of its storage; the file is damaged")
        if count > flat.size:
            raise Refused(f"has a tensor of {count} elements over a storage of {flat.size} (its strides repeat "
                          "elements), which torch.save never writes for weights")
        strides = tuple(s * flat.itemsize if n > 1 else 0 for n, s in zip(self.size, self.stride))
        return np.lib.stride_tricks.as_strided(flat[self.offset :], self.size, strides, writeable=False)


class _Allowed(_Inert):
    """An allowed global that the file may call: the function behind it cannot be reached or changed."""

    __slots__ = ("_function",)
    what = "allowed globals"

    def __init__(self, function: Callable[..., Any]):
        object.__setattr__(self, "_function", function)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the reader's allowed globals cannot be changed")

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)


def _whole(value: Any, what: str) -> int:
    """``value`` if it is a plain int from 0 to 2**62, else a refusal naming ``what``."""
    if type(value) is not int or not 0 <= value < _MAX_EXTENT:
        found = f"the text '{shown(value, 40)}'" if type(value) is str else shown(value, 40)
        raise Refused(f"has a tensor whose {what} is {found}, not a whole number from 0 to 2**62; "
                      "the file is damaged or forged")
    return value


def _extents(values: Any, what: str) -> tuple[int, ...]:
    if type(values) not in (tuple, list) or len(values) > _MAX_DIMS:
        raise Refused(f"has a tensor whose {what} is not a tuple of at most {_MAX_DIMS} numbers; the file is damaged")
    return tuple(_whole(v, what) for v in values)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise Refused("builds a tensor from something that is not a storage; the file is damaged or forged")
    size, stride = _extents(size, "size"), _extents(stride, "stride")
    if len(size) != len(stride):
        raise Refused(f"has a tensor with {len(size)} sizes but {len(stride)} strides; the file is damaged")
    return _TensorRef(storage, _whole(offset, "storage offset"), size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _identity(value: Any, *_: Any) -> Any:
    return value


def _device(*args: Any) -> str:
    if not 1 <= len(args) <= 2 or not all(type(a) is int or (type(a) is str and len(a) <= 32) for a in args):
        raise Refused("names a torch.device that is not a short type and index; the file is damaged or forged")
    return ":".join(str(a) for a in args)


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    """pickle builds an ``OrderedDict`` empty and then fills it; copying one given here would let a
    few bytes repeat a large dict."""
    if args:
        raise Refused("builds an OrderedDict from arguments, which pickle never writes; the file is forged")
    return collections.OrderedDict()


def _reconstruct(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (how plain Python objects such as ``argparse.Namespace`` pickle),
    for the inert stand-ins only: a real class never gets this far, find_class refuses it first."""
    if not (isinstance(cls, type) and issubclass(cls, TorchScriptObject)) or base is not object:
        raise Refused("rebuilds an object that is not one of the reader's inert stand-ins with "
                      "copyreg._reconstructor, which a weights file has no reason to do")
    return cls()


# Classes whose instances (or the class objects themselves) sit in training checkpoints beside the
# tensors: Lightning's callbacks (keys of its "callbacks" dict) and the argparse.Namespace of DiT's
# train script. They come back as inert stand-ins that hold their state and run nothing.
_INERT_MODULES = ("__torch__.", "pytorch_lightning.", "lightning.", "lightning_fabric.")
_INERT_CLASSES = {("argparse", "Namespace")}

_ALLOWED = {
    ("copyreg", "_reconstructor"): _Allowed(_reconstruct),
    ("builtins", "object"): object,  # an immutable built-in type: BUILD cannot change it
    ("torch._utils", "_rebuild_tensor"): _Allowed(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Allowed(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Allowed(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Allowed(_rebuild_parameter),
    ("torch", "device"): _Allowed(_device),
    ("collections", "OrderedDict"): _Allowed(_ordered_dict),
    **{("torch.jit._pickle", f"build_{kind}list"): _Allowed(_identity)
       for kind in ("int", "float", "bool", "double", "tensor")},
    ("torch.jit._pickle", "restore_type_tag"): _Allowed(_identity),
}


def _is_inert(module: str, name: str) -> bool:
    return module.startswith(_INERT_MODULES) or module == "__torch__" or (module, name) in _INERT_CLASSES


def _check_global(module: str, name: str) -> None:
    is_storage = module == "torch" and name in _STORAGE_DTYPES
    if not (is_storage or _is_inert(module, name) or (module, name) in _ALLOWED):
        raise Refused(f"refers to `{shown(module)}.{shown(name)}`, which a weights file has no reason to contain; "
                      "refusing to run code from it")


class _Unpickler(pickle.Unpickler):
    """Resolves only allowlisted globals; storages come back as ``_Storage`` records to fill."""

    def __init__(self, stream: io.BytesIO, byteorder: str):
        super().__init__(stream)
        self.stream = stream
        self.byteorder = byteorder
        self.storages: dict[str, _Storage] = {}
        self.views: list[tuple[_Storage, str, int]] = []
        self.script_classes: dict[str, type] = {}

    def load(self) -> Any:
        """The next pickle of the stream, once ``scan_pickle`` has walked its opcodes."""
        scan_pickle(self.stream, _check_global)
        return super().load()

    def find_class(self, module: str, name: str) -> Any:
        _check_global(module, name)
        if module == "torch" and name in _STORAGE_DTYPES:
            dtype = _STORAGE_DTYPES[name]
            return _StorageType(dtype.newbyteorder(self.byteorder) if dtype.itemsize > 1 else dtype)
        if _is_inert(module, name):
            return self._script_class(f"{module}.{name}")
        return _ALLOWED[(module, name)]

    def _script_class(self, qualified_name: str) -> type:
        if qualified_name not in self.script_classes:
            self.script_classes[qualified_name] = type(
                qualified_name.rsplit(".", 1)[-1], (TorchScriptObject,), {"qualified_name": qualified_name})
        return self.script_classes[qualified_name]

    def persistent_load(self, pid: Any) -> _Storage:
        if not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise Refused("has a persistent reference that is not a tensor storage ('storage', type, key, "
                          "location, size); the file is damaged or forged")
        key, numel = pid[2], _whole(pid[4], "storage size")
        if type(key) is not str or not _STORAGE_KEY.fullmatch(key):
            raise Refused(f"names a storage '{shown(key)}' that is not a plain key inside the archive (torch writes "
                          "0, 1, 2, ...); refusing to look outside it")
        root = self.storages.setdefault(key, _Storage(pid[1].dtype, numel))
        if len(pid) == 5 or pid[5] is None:
            return root
        # Legacy files may store a view of a storage: (view key, offset in elements, view size).
        view = pid[5]
        if type(view) is not tuple or len(view) != 3 or type(view[0]) is not str or not _STORAGE_KEY.fullmatch(view[0]):
            raise Refused("has a storage view that is not (key, offset, size); the file is damaged or forged")
        if view[0] not in self.storages:
            self.storages[view[0]] = _Storage(root.dtype, _whole(view[2], "storage view size"))
            self.views.append((self.storages[view[0]], key, _whole(view[1], "storage view offset")))
        return self.storages[view[0]]


def _read_zip(path: pathlib.Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        members = MemberReader(archive, path.stat().st_size)
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise UserError(f"{path} is a zip file but not a PyTorch file (it has no <root>/data.pkl); check the path")
        root = pickles[0].split("/")[0]
        byteorder = "<"
        if 0 < members.size(f"{root}/byteorder") <= 16:
            if members.read(f"{root}/byteorder", members.size(f"{root}/byteorder")).tobytes().strip() == b"big":
                byteorder = ">"
        data_pkl = members.read(pickles[0], members.size(pickles[0])).tobytes()
        unpickler = _Unpickler(io.BytesIO(data_pkl), byteorder)
        tree = unpickler.load()
        for key, storage in unpickler.storages.items():
            nbytes = storage.numel * storage.dtype.itemsize
            raw = members.read(f"{root}/data/{key}", nbytes)
            storage.array = raw.view(storage.dtype)
        return tree


def _read_legacy(path: pathlib.Path) -> Any:
    """Storages come back as views of the file's bytes: the memory is the file's size."""
    data = path.read_bytes()
    stream = io.BytesIO(data)
    header = _Unpickler(stream, "<")
    if header.load() != _LEGACY_MAGIC:
        raise UserError(f"{path} is neither a zip nor a legacy PyTorch file; check the path or download it again")
    header.load()  # protocol version
    sys_info = header.load()
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    unpickler = _Unpickler(stream, byteorder)
    tree = unpickler.load()
    keys = unpickler.load()
    if type(keys) is not list or not all(type(key) is str for key in keys):
        raise Refused("lists its storages as something other than a list of keys; the file is damaged")
    for key in keys:
        storage = unpickler.storages.get(key)
        if storage is None:
            raise Refused(f"lists a storage {shown(key)} that none of its tensors uses; the file is damaged")
        head = stream.read(8)
        if len(head) < 8:
            raise Refused(f"ends before the storage {shown(key)}; the file is truncated")
        numel = struct.unpack("<q", head)[0]
        if not 0 <= numel <= (len(data) - stream.tell()) // storage.dtype.itemsize:
            raise Refused(f"declares a storage of {numel} elements where {len(data) - stream.tell()} bytes remain; "
                          "the file is truncated")
        storage.numel = numel
        storage.array = np.frombuffer(data, storage.dtype, count=numel, offset=stream.tell())
        stream.seek(numel * storage.dtype.itemsize, io.SEEK_CUR)
    for view, root_key, offset in unpickler.views:
        root = unpickler.storages[root_key].array
        if root is not None:
            if offset + view.numel > root.size:
                raise Refused("has a storage view that reaches past the end of its storage; the file is damaged")
            view.array = root[offset : offset + view.numel]
    return tree


def load_tree(path: str | pathlib.Path) -> Any:
    """The unpickled object of a PyTorch file, with tensors as read-only numpy arrays (views of
    their storage) and TorchScript objects as ``TorchScriptObject``s (their attributes in ``.state``).

    Raises ``UserError`` (one sentence naming the file) for a missing, truncated, foreign or forged
    file; nothing from the file is executed. Containers nest at most ``MAX_DEPTH`` deep.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; check the path")
    with _one_sentence(path):
        if zipfile.is_zipfile(path):
            return _materialise(_read_zip(path))
        with path.open("rb") as file:
            start = file.read(2)
        if start[:1] != b"\x80":
            raise UserError(f"{path} is not a PyTorch file (neither a complete zip nor a pickle); "
                            "it may be truncated, so download it again")
        return _materialise(_read_legacy(path))


@contextlib.contextmanager
def _one_sentence(path: pathlib.Path) -> Iterator[None]:
    """Turns whatever reading ``path`` raises into one ``UserError`` sentence that names it."""
    try:
        yield
    except UserError:
        raise
    except Refused as reason:
        raise UserError(f"{path} {reason}") from None
    except MemoryError:  # the checks keep allocations within the file's size; if not, it is a bug
        raise
    except Exception as error:  # a malformed file can fail in many ways; all mean a damaged file
        raise UserError(f"{path} is not a readable PyTorch file ({type(error).__name__}: {shown(str(error), 160)}); "
                        "download it again") from None


def _children(obj: Any) -> list[Any] | None:
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, TorchScriptObject):
        return [getattr(obj, "state", None)]
    return None


def _materialise(tree: Any) -> Any:
    """Replaces tensor references by arrays in dicts, lists, tuples and script objects, walking
    them with a stack of its own (no recursion), at most ``MAX_DEPTH`` deep."""
    done: dict[int, Any] = {}  # id -> what replaces it (itself for a mutable container)
    alive: list[Any] = []  # keeps every visited object alive, so that no id is reused during the walk
    pending: list[tuple[Any, int, bool]] = [(tree, 0, False)]
    while pending:
        obj, depth, children_done = pending.pop()
        if children_done:
            done[id(obj)] = _rebuilt(obj, done)
            continue
        if id(obj) in done:
            continue
        if depth > MAX_DEPTH:
            raise Refused(f"nests containers more than {MAX_DEPTH} levels deep, which no weights file does")
        alive.append(obj)
        if isinstance(obj, _TensorRef):
            done[id(obj)] = obj.materialise()
            continue
        children = _children(obj)
        if children is None:
            continue
        done[id(obj)] = obj  # a cycle back to it finds it visited
        pending.append((obj, depth, True))
        pending.extend((child, depth + 1, False) for child in children)
    return done.get(id(tree), tree)


def _rebuilt(obj: Any, done: dict[int, Any]) -> Any:
    def new(value: Any) -> Any:
        return done.get(id(value), value)

    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = new(obj[key])
        return obj
    if isinstance(obj, list):
        obj[:] = [new(item) for item in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(new(item) for item in obj)
    obj.state = new(getattr(obj, "state", None))
    return obj


def load_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor in a PyTorch file, by dotted name: the keys of a ``state_dict`` as saved, or for
    a TorchScript module the attribute path of each tensor (``net.layers.conv.weight``).

    Raises ``UserError`` for a missing, truncated or foreign file, and for a file whose pickle names
    any global outside the allowlist (nothing from such a file is executed).
    """
    path = pathlib.Path(path)
    tree = load_tree(path)
    with _one_sentence(path):
        return _flatten(tree, budget=_NAME_ALLOWANCE + 4 * path.stat().st_size)


_NAME_ALLOWANCE = 1 << 20  # characters of tensor names any file may produce, beyond 4 per byte of it


def _flatten(tree: Any, budget: int) -> dict[str, np.ndarray]:
    """Tensors by dotted path, in depth-first order; a container reached twice (a shared
    submodule) is listed under its first name only. Names cost their length from ``budget``, so
    a few bytes that reuse one long key many times cannot make gigabytes of names."""
    out: dict[str, np.ndarray] = {}
    listed: set[int] = set()
    pending: list[tuple[Any, str]] = [(tree, "")]
    while pending:
        obj, prefix = pending.pop()
        if isinstance(obj, np.ndarray):
            out[prefix] = obj
            continue
        if id(obj) in listed:
            continue
        if isinstance(obj, TorchScriptObject):
            listed.add(id(obj))
            pending.append((getattr(obj, "state", None), prefix))
            continue
        if isinstance(obj, dict):
            items = list(obj.items())
        elif isinstance(obj, (list, tuple)):
            items = list(enumerate(obj))
        else:
            continue
        listed.add(id(obj))
        named = []
        for key, value in items:
            piece = str(key) if type(key) in (str, int, float, bool) or key is None else f"<{type(key).__name__}>"
            name = f"{prefix}.{piece}" if prefix else piece
            budget -= len(name)
            if budget < 0:
                raise Refused("names its tensors with more characters than its size accounts for (one long key "
                              "reused many times), which no weights file does")
            named.append((value, name))
        pending.extend(reversed(named))
    return out
