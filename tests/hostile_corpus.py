"""The hostile corpus: files that the readers of untrusted input must refuse with one sentence,
without running code from them and without allocating more than their size justifies.

Each ``Case`` writes its file (or folder) into an empty directory and says which reader gets it
(``READERS`` in ``hostile_runner``). Payloads that would run code point at a sentinel folder: a
shell command or ``open`` that creates a file there, or ``trap`` below, which a pickle can name as
``hostile_corpus.trap`` and which leaves a file there if it is ever called. Built from the
standard library only (``hostile_pickles``); the cases are listed at import, the bytes are made
when a case is written.
"""

from __future__ import annotations

import bz2
import dataclasses
import functools
import json
import math
import os
import pathlib
import struct
import zipfile
import zlib
from typing import Callable

from hostile_pickles import (
    APPEND, BUILD, COUNTS, EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, FROZENSET, MARK, NEWOBJ, NEWOBJ_EX, NONE, OBJ,
    POP, REDUCE, SETITEM, STACK_GLOBAL, TRUE, TUPLE1, WEIGHT, Member, build_zip, dct, deflate_zeros, get, glob,
    integer, ints, legacy, local_header, lst, npy, npz, plain_tensor, png, proto2, proto4, put, real, stack_glob,
    state_dict_pickle, storage, tensor, text, torch_zip, tup, valid_legacy, valid_zip,
)

SENTINELS = "HOSTILE_SENTINELS"  # environment variable: the folder a payload's code would write into
DEEP = 100_000  # nesting of the deep cases (the reader allows 1,000)
DEEP_BY_MEMO = 20_000  # for the two that need a few opcodes per level (slow under tracemalloc)


def trap(*args: object, **kwargs: object) -> object:
    """A global the hostile pickles name: calling it leaves ``trap-called`` in the sentinel folder."""
    pathlib.Path(os.environ.get(SENTINELS, "."), "trap-called").touch()
    return trap


@dataclasses.dataclass(frozen=True)
class Case:
    category: str
    name: str
    reader: str  # torch | samples | caption_folder | image_folder
    make: Callable[[pathlib.Path, pathlib.Path], pathlib.Path]  # (empty folder, sentinel folder) -> what to read

    @property
    def id(self) -> str:
        return f"{self.category}-{self.name}"


CASES: list[Case] = []


def _file(category: str, name: str, data: Callable[[pathlib.Path], bytes], reader: str = "torch",
          suffix: str = ".pt") -> None:
    """A case that is one file of ``data(sentinel folder)``."""
    def make(folder: pathlib.Path, sentinels: pathlib.Path) -> pathlib.Path:
        path = folder / f"{name}{suffix}"
        path.write_bytes(data(sentinels))
        return path

    CASES.append(Case(category, name, reader, make))


def _pt(category: str, name: str, data_pkl: bytes | Callable[[pathlib.Path], bytes],
        storages: dict[str, bytes] | None = None) -> None:
    """A case that is a torch.save zip holding ``data_pkl`` (and by default storage 0: six floats)."""
    make = data_pkl if callable(data_pkl) else (lambda _: data_pkl)
    _file(category, name, lambda s: torch_zip(make(s), {"0": WEIGHT} if storages is None else storages))


# --- code: reaching os, subprocess, builtins or importlib through every opcode that calls ----------

def _targets(sentinels: pathlib.Path) -> dict[str, tuple[str, str, list[bytes], bytes]]:
    """name -> (module, global, encoded arguments, what to append to call the result once more)."""
    def shell(tag: str) -> list[bytes]:
        return [text(f"touch {sentinels / tag}")]

    def python(tag: str) -> list[bytes]:
        return [text(f"open({str(sentinels / tag)!r}, 'w')")]

    os_module = glob("builtins", "__import__") + tup(text("os")) + REDUCE
    return {
        "os_system": ("os", "system", shell("os.system"), b""),
        "posix_system": ("posix", "system", shell("posix.system"), b""),
        "subprocess_Popen": ("subprocess", "Popen", [lst(text("touch"), text(str(sentinels / "Popen")))], b""),
        "builtins_eval": ("builtins", "eval", python("eval"), b""),
        "builtins_exec": ("builtins", "exec", python("exec"), b""),
        "builtins_getattr": ("builtins", "getattr", [os_module, text("system")],
                             tup(*shell("getattr")) + REDUCE),
        "builtins___import__": ("builtins", "__import__", [text("os")], b""),
        "importlib_import_module": ("importlib", "import_module", [text("os")], b""),
        "trap": ("hostile_corpus", "trap", [text("called")], b""),
    }


def _route(route: str, module: str, name: str, args: list[bytes]) -> bytes:
    """The pickle body that calls ``module.name(*args)`` through the opcode ``route``."""
    joined = b"".join(args)
    return {
        "GLOBAL": glob(module, name) + tup(*args) + REDUCE,
        "STACK_GLOBAL": stack_glob(module, name) + tup(*args) + REDUCE,
        # REDUCE of a global whose names come from the memo: no scan of the opcodes can read them
        "REDUCE": text(module) + put(0) + POP + text(name) + put(1) + POP + get(0) + get(1) + STACK_GLOBAL
        + tup(*args) + REDUCE,
        "INST": MARK + joined + b"i" + module.encode() + b"\n" + name.encode() + b"\n",
        "OBJ": MARK + glob(module, name) + joined + OBJ,
        "NEWOBJ": glob(module, name) + tup(*args) + NEWOBJ,
        "NEWOBJ_EX": glob(module, name) + tup(*args) + EMPTY_DICT + NEWOBJ_EX,
        # the classic: BUILD sets __setstate__ on an object without one, the next BUILD calls it
        "BUILD": glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + dct((text("__setstate__"), glob(module, name)))
        + BUILD + (args[0] if len(args) == 1 else tup(*args)) + BUILD,
    }[route]


ROUTES = ("GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD")
for _target in _targets(pathlib.Path("/")):
    for _via in ROUTES:
        def _code(sentinels: pathlib.Path, target: str = _target, via: str = _via) -> bytes:
            module, name, args, then = _targets(sentinels)[target]
            return proto4(_route(via, module, name, args) + then)

        _pt("code", f"{_target}-via-{_via}", _code)

# --- build: pickle BUILD aimed at the reader's own objects ------------------------------------------

_STATE = dct((text("pwned"), TRUE))
for _name, _target_bytes in {
    "reconstructor": glob("copyreg", "_reconstructor"),
    "rebuild_tensor_v2": glob("torch._utils", "_rebuild_tensor_v2"),
    "rebuild_parameter": glob("torch._utils", "_rebuild_parameter"),
    "device": glob("torch", "device"),
    "OrderedDict": glob("collections", "OrderedDict"),
    "build_intlist": glob("torch.jit._pickle", "build_intlist"),
    "restore_type_tag": glob("torch.jit._pickle", "restore_type_tag"),
    "storage_type": glob("torch", "FloatStorage"),
    "storage_record": storage(text("0"), integer(6)),
    "tensor_record": plain_tensor(),
    "builtins_object": glob("builtins", "object"),
    "script_class": glob("__torch__.model", "Net"),
    "namespace_class": glob("argparse", "Namespace"),
}.items():
    _pt("build", _name, proto2(_target_bytes + _STATE + BUILD))
# BUILD's other form, (dict state, slot state): setattr on the object, here the function behind a global
_pt("build", "slotstate_rebuild_tensor_v2",
    proto2(glob("torch._utils", "_rebuild_tensor_v2") + tup(NONE, dct((text("_function"), glob("torch", "device"))))
           + BUILD))

# --- persistent: storage references that point outside the archive, or are not references ---------

def _pid(*fields: bytes) -> bytes:
    return tensor(tup(*fields) + b"Q", integer(0), ints(2, 3), ints(3, 1))


_CPU, _SIX = text("cpu"), integer(6)
for _name, _ref in {
    "missing_key": storage(text("7"), _SIX),
    "dotdot_key": storage(text("../../../etc/passwd"), _SIX),
    "absolute_key": storage(text("/etc/passwd"), _SIX),
    "backslash_key": storage(text("..\\..\\evil"), _SIX),
    "empty_key": storage(text(""), _SIX),
    "int_key": storage(integer(0), _SIX),
    "negative_numel": storage(text("0"), integer(-1)),
    "float_numel": storage(text("0"), real(6.0)),
    "numel_2_70": storage(text("0"), integer(2**70)),
    "bool_numel": storage(text("0"), TRUE),
}.items():
    _pt("persistent", _name, proto2(dct((text("w"), tensor(_ref, integer(0), ints(2, 3), ints(3, 1))))))
_pt("persistent", "text_persid", proto2(tensor(b"P0\n", integer(0), ints(2, 3), ints(3, 1))))
_pt("persistent", "not_storage_tag", proto2(_pid(text("module"), glob("torch", "FloatStorage"), text("0"), _CPU, _SIX)))
_pt("persistent", "short_pid", proto2(_pid(text("storage"), glob("torch", "FloatStorage"), text("0"))))
_pt("persistent", "type_not_storage", proto2(_pid(text("storage"), integer(5), text("0"), _CPU, _SIX)))


def _legacy_view(view: bytes) -> bytes:
    ref = tup(text("storage"), glob("torch", "FloatStorage"), text("0"), _CPU, _SIX, view) + b"Q"
    return legacy(proto2(dct((text("w"), tensor(ref, integer(0), ints(2), ints(1))))), ["0"], [(6, WEIGHT)])


for _name, _view in {"view_negative_offset": tup(text("1"), integer(-1), integer(2)),
                     "view_past_end": tup(text("1"), integer(4), integer(4)),
                     "view_not_a_tuple": text("1")}.items():
    _file("persistent", f"legacy_{_name}", lambda _, v=_view: _legacy_view(v))

# --- storage: sizes, strides and offsets that read outside the storage or multiply it --------------

for _name, (_offset, _size, _stride) in {
    "negative_size": (integer(0), ints(-1, 3), ints(3, 1)),
    "negative_stride": (integer(0), ints(2, 3), ints(3, -1)),
    "negative_offset": (integer(-1), ints(2, 3), ints(3, 1)),
    "float_size": (integer(0), tup(real(2.0), integer(3)), ints(3, 1)),
    "string_stride": (integer(0), ints(2, 3), tup(text("3"), integer(1))),
    "float_offset": (real(0.0), ints(2, 3), ints(3, 1)),
    "bool_size": (integer(0), tup(TRUE, integer(3)), ints(3, 1)),
    "size_2_70": (integer(0), ints(2**70), ints(1)),
    "stride_2_70": (integer(0), ints(2), ints(2**70)),
    "offset_2_70": (integer(2**70), ints(2, 3), ints(3, 1)),
    "mismatched_lengths": (integer(0), ints(2, 3), ints(3)),
    "dims_65": (integer(0), ints(*[1] * 65), ints(*[1] * 65)),
    "offset_past_end": (integer(6), ints(1), ints(1)),
    "stride_past_end": (integer(0), ints(2, 3), ints(100, 1)),
    "size_not_tuple": (integer(0), integer(6), ints(1)),
    "size_dict": (integer(0), dct(), ints(1)),
    "empty_with_2_61_columns": (integer(0), ints(0, 2**61), ints(1, 1)),
}.items():
    _pt("storage", _name, proto2(dct((text("w"), tensor(storage(text("0"), _SIX), _offset, _size, _stride)))))
_pt("storage", "storage_not_storage", proto2(tensor(integer(5), integer(0), ints(2, 3), ints(3, 1))))
# one float, viewed 2**29 times through a zero stride: 375 bytes that asked for a 2 GiB array
_pt("storage", "zero_stride_2gib", proto2(dct((text("w"), plain_tensor(size=(2**29,), stride=(0,), numel=1)))),
    {"0": WEIGHT[:4]})
# 8 KiB viewed as 2048**3 bytes through overlapping strides
_pt("storage", "overlapping_strides_8gib",
    proto2(plain_tensor(size=(2048,) * 3, stride=(1,) * 3, numel=8192, storage_type="ByteStorage")), {"0": bytes(8192)})
_pt("storage", "member_shorter_than_storage", proto2(plain_tensor()), {"0": WEIGHT[:8]})
_file("storage", "legacy_negative_count", lambda _: legacy(state_dict_pickle(), ["0", "1"], [(-1, WEIGHT), (7, COUNTS)]))
_file("storage", "legacy_count_past_end", lambda _: legacy(state_dict_pickle(), ["0", "1"], [(6, WEIGHT), (1000, COUNTS)]))
_file("storage", "legacy_keys_not_a_list", lambda _: legacy(state_dict_pickle(), 5, []))  # type: ignore[arg-type]

# --- zip: member names, compression, bombs, overlaps ------------------------------------------------

def _members(*extra: Member, pkl: bytes | None = None) -> list[Member]:
    return [Member("archive/data.pkl", pkl or proto2(dct((text("w"), plain_tensor())))),
            Member("archive/data/0", WEIGHT), *extra]


for _name, _member in {"dotdot": "../evil", "dotdot_inside": "archive/data/../../evil", "absolute": "/etc/evil",
                       "backslash": "archive\\..\\..\\evil"}.items():
    _file("zip", f"member_{_name}", lambda _, m=_member: build_zip(_members(Member(m, b"x"))))
_file("zip", "root_dotdot", lambda _: build_zip([Member("../data.pkl", proto2(plain_tensor())),
                                                 Member("../data/0", WEIGHT)]))
for _name, _method in {"aes_99": 99, "tokenize_7": 7, "bzip2_12": zipfile.ZIP_BZIP2,
                       "lzma_14": zipfile.ZIP_LZMA}.items():
    _file("zip", f"method_{_name}", lambda _, m=_method: build_zip(
        [Member("archive/data.pkl", proto2(plain_tensor())), Member("archive/data/0", bz2.compress(WEIGHT), m,
                                                                    size=len(WEIGHT), crc=0)]))
_file("zip", "encrypted", lambda _: build_zip([Member("archive/data.pkl", proto2(plain_tensor())),
                                               Member("archive/data/0", WEIGHT, flag=1)]))
_file("zip", "no_data_pkl", lambda _: build_zip([Member("archive/data/0", WEIGHT)]))
_file("zip", "data_pkl_not_a_pickle", lambda _: build_zip([Member("archive/data.pkl", b"hello, world")]))
_file("zip", "central_directory_past_end", lambda _: valid_zip()[:-6] + struct.pack("<IH", 10**9, 0))


def _bomb_2gib(_: pathlib.Path) -> bytes:
    """2 MB whose storage member inflates to 2 GiB of zeros, for a tensor that asks for exactly that."""
    payload, crc = deflate_zeros(1 << 31)
    return build_zip(_members(pkl=proto2(plain_tensor(size=(2**29,), stride=(1,), numel=2**29)))[:1]
                     + [Member("archive/data/0", payload, zipfile.ZIP_DEFLATED, size=1 << 31, crc=crc)])


def _lying_4gib(_: pathlib.Path) -> bytes:
    """A few hundred bytes whose member declares 4 GiB, for a storage of 2**30 floats."""
    payload, crc = deflate_zeros(0, bytes(4096))
    return build_zip(_members(pkl=proto2(plain_tensor(size=(2**30 - 1,), stride=(1,), numel=2**30 - 1)))[:1]
                     + [Member("archive/data/0", payload, zipfile.ZIP_DEFLATED, size=2**32 - 2, crc=crc)])


def _pickle_bomb(_: pathlib.Path) -> bytes:
    payload, crc = deflate_zeros(1 << 28, proto2(NONE)[:-1])
    return build_zip([Member("archive/data.pkl", payload, zipfile.ZIP_DEFLATED, size=(1 << 28) + 3, crc=crc)])


def _lying_stored(_: pathlib.Path) -> bytes:
    return build_zip(_members(pkl=proto2(plain_tensor(size=(2**30 - 1,), stride=(1,), numel=2**30 - 1)))[:1]
                     + [Member("archive/data/0", WEIGHT, size=2**32 - 2)])


def _overlapping(_: pathlib.Path) -> bytes:
    """256 stored members nested in each other (each local header inside the previous member's
    bytes) over one 1 MiB payload: 1 MiB of file, 256 MiB of storages."""
    count, payload = 256, bytes(1 << 20)
    names = [f"archive/data/{k:03d}" for k in range(count)]
    body = proto2(dct(*((text(f"w{k}"), plain_tensor(f"{k:03d}", (1 << 20,), (1,), 1 << 20, 0, "ByteStorage"))
                        for k in range(count))))
    pkl = Member("archive/data.pkl", body)
    prefix = local_header(pkl) + body
    headers = [b""] * count
    for k in reversed(range(count)):  # member k holds the headers of the members after it, then the payload
        rest = b"".join(headers[k + 1 :]) + payload
        headers[k] = local_header(Member(names[k], rest))
    offsets, position = [], len(prefix)
    for header in headers:
        offsets.append(position)
        position += len(header)
    rest = b"".join(headers) + payload
    return build_zip([Member(pkl.name, body, at=0)] + [
        Member(names[k], rest[offsets[k] - len(prefix) + len(headers[k]):], at=offsets[k]) for k in range(count)],
        prefix + rest)


_file("zip", "bomb_2gib_in_2mb", _bomb_2gib)
_file("zip", "bomb_declares_4gib", _lying_4gib)
_file("zip", "bomb_data_pkl_256mib", _pickle_bomb)
_file("zip", "stored_declares_4gib", _lying_stored)
_file("zip", "overlapping_members_256x", _overlapping)

# --- nesting: containers 100,000 deep, and tricks that hide depth from a scan ------------------------


def _nested_script_objects() -> bytes:
    """obj_0.state = {"m": obj_1}, obj_1.state = {"m": obj_2}, ... (NEWOBJ + BUILD)."""
    new = get(0) + EMPTY_TUPLE + NEWOBJ
    return (glob("__torch__", "M") + put(0) + POP + (new + EMPTY_DICT + text("m")) * DEEP_BY_MEMO + new
            + (SETITEM + BUILD) * DEEP_BY_MEMO)


def _aliased_lists() -> bytes:
    """Lists joined through the memo after they are stored: each APPEND looks one level deep."""
    made = b"".join(EMPTY_LIST + put(k) + POP for k in range(DEEP_BY_MEMO))
    return made + b"".join(get(k) + get(k + 1) + APPEND + POP for k in range(DEEP_BY_MEMO - 1)) + get(0)


for _name, _body in {
    "lists": lambda: EMPTY_LIST * DEEP + APPEND * (DEEP - 1),
    "tuples_tuple1": lambda: EMPTY_TUPLE + TUPLE1 * DEEP,
    "tuples_mark": lambda: MARK * DEEP + b"t" * DEEP,
    "dicts": lambda: (EMPTY_DICT + text("k")) * DEEP + EMPTY_DICT + SETITEM * DEEP,
    # hashing a key 150,000 deep overflows the C stack (Python 3.11): a segfault, not an exception
    "tuple_as_dict_key": lambda: EMPTY_DICT + EMPTY_TUPLE + TUPLE1 * (2 * DEEP) + integer(1) + SETITEM,
    "frozensets": lambda: MARK * DEEP + FROZENSET * DEEP,
    "script_objects": _nested_script_objects,
    "memo_aliased_lists": _aliased_lists,
    "lists_1001": lambda: EMPTY_LIST * 1002 + APPEND * 1001,
}.items():
    _pt("nesting", _name, lambda _, b=_body: proto4(b()))

# --- truncation: prefixes of valid files --------------------------------------------------------------


def _prefixes(length: int, count: int) -> list[int]:
    return sorted({round(k * (length - 1) / (count - 1)) for k in range(count)})


for _cut in _prefixes(len(valid_zip()), 50):
    _file("truncation", f"zip_{_cut:05d}", lambda _, c=_cut: valid_zip()[:c])
for _cut in _prefixes(len(valid_legacy()), 25):
    _file("truncation", f"legacy_{_cut:05d}", lambda _, c=_cut: valid_legacy()[:c])
for _cut in _prefixes(len(state_dict_pickle()), 10):
    _pt("truncation", f"data_pkl_{_cut:05d}", state_dict_pickle()[:_cut], {"0": WEIGHT, "1": COUNTS})

# --- resource: numbers in the pickle stream that would size an allocation --------------------------


def _repeated_calls(callable_: bytes, argument: bytes, call: bytes, times: int) -> bytes:
    """``[...] * times`` of ``call`` (a few bytes) after memo slot 0 holds ``callable_`` and slot 1
    ``argument``."""
    return callable_ + put(0) + POP + argument + put(1) + POP + EMPTY_LIST + (call + APPEND) * times


def _long_names() -> bytes:
    """20,000 dicts, each {a 100 KB key: one tensor}: 2 GB of names from 350 KB."""
    return (text("k" * 100_000) + put(0) + POP + plain_tensor() + put(1) + POP + EMPTY_LIST
            + (EMPTY_DICT + get(0) + get(1) + SETITEM + APPEND) * 20_000)


for _name, _data in {
    "memo_slot_2_32": b"\x80\x02" + NONE + b"r\xff\xff\xff\xff.",
    "memo_slot_text_2_27": b"\x80\x02" + NONE + b"p134217728\n.",  # the C unpickler fills a 2 GiB memo table
    "binbytes8_1gib": b"\x80\x04\x8e" + struct.pack("<Q", 2**30) + b"abc.",  # it allocates the length first
    "binunicode8_2_62": b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"abc.",
    "long4_2_31": b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"abc.",
    "frame_2_60": b"\x80\x04\x95" + struct.pack("<Q", 2**60) + NONE + b".",
    "ext2": b"\x80\x02\x83" + struct.pack("<H", 1) + b".",
    "next_buffer": b"\x80\x05\x97.",
    "get_unset_slot": proto2(get(5)),
    "stop_on_empty_stack": b"\x80\x02.",
    "int_of_100k_digits": b"\x80\x02I" + b"9" * 100_000 + b"\n.",
    "device_2gb_of_strings": proto2(_repeated_calls(glob("torch", "device"), text("c" * 1_000_000),
                                                    get(0) + MARK + get(1) + get(1) + b"t" + REDUCE, 1000)),
    "ordered_dict_copies": proto2(_repeated_calls(glob("collections", "OrderedDict"),
                                                  tup(dct(*((text(f"k{i}"), integer(i)) for i in range(10_000)))),
                                                  get(0) + get(1) + REDUCE, 1000)),
    "names_2gb": proto2(_long_names()),
}.items():
    _pt("resource", _name, _data)

# --- names: what a message prints from the file ------------------------------------------------------

for _name, (_module, _global) in {"newline_in_module": ("os\nrm -rf ~", "system"),
                                  "terminal_escape": ("os", "\x1b[2J\x1b[31msystem"),
                                  "module_of_10k_chars": ("m" * 10_000, "x")}.items():
    _pt("names", _name, proto4(stack_glob(_module, _global) + tup(text("x")) + REDUCE))
_pt("names", "escape_in_storage_key", proto2(tensor(storage(text("\x1b]0;pwned\x07"), _SIX), integer(0), ints(6),
                                                    ints(1))))
_huge = 10**5000  # str() of an int past 4,300 digits raises ValueError in Python 3.11
_pt("names", "name_from_a_5001_digit_int",
    proto2(dct((b"\x8b" + struct.pack("<i", (_huge.bit_length() + 8) // 8)
                + _huge.to_bytes((_huge.bit_length() + 8) // 8, "little", signed=True), plain_tensor()))))
_file("names", "escape_in_member_name", lambda _: build_zip(_members(Member("../\n\x1b[31mevil", b"x"))))

# --- samples: .npz files and sample folders for the evaluator ---------------------------------------

_IMAGES = npy("|u1", (2, 4, 4, 3), bytes(96))


def _os_system_pickle(sentinels: pathlib.Path) -> bytes:
    return proto2(glob("os", "system") + tup(text(f"touch {sentinels / 'npz'}")) + REDUCE)


def _npz_case(name: str, members: Callable[[pathlib.Path], dict[str, bytes]], compression: int = 0) -> None:
    _file("samples", name, lambda s: npz(members(s), compression), "samples", ".npz")


_npz_case("object_images_with_pickle", lambda s: {"arr_0.npy": npy("|O", (2,), _os_system_pickle(s))})
_npz_case("object_labels_with_pickle", lambda s: {"arr_0.npy": _IMAGES, "arr_1.npy": npy("|O", (2,), _os_system_pickle(s))})
for _name, (_descr, _shape) in {"float32_images": ("<f4", (2, 4, 4, 3)), "float64_nan_images": ("<f8", (2, 4, 4, 3)),
                                "int64_images": ("<i8", (2, 4, 4, 3)), "no_channel_axis": ("|u1", (2, 4, 4)),
                                "five_axes": ("|u1", (2, 1, 4, 4, 3)), "four_channels": ("|u1", (2, 4, 4, 4)),
                                "two_channels": ("|u1", (2, 4, 4, 2)), "no_images": ("|u1", (0, 4, 4, 3)),
                                "zero_height": ("|u1", (2, 0, 4, 3)), "one_image": ("|u1", (1, 4, 4, 3))}.items():
    _size = {"<f4": 4, "<f8": 8, "<i8": 8, "|u1": 1}[_descr] * math.prod(_shape)
    _fill = struct.pack("<d", float("nan")) * (_size // 8) if "nan" in _name else bytes(_size)
    _npz_case(_name, lambda _, d=_descr, s=_shape, f=_fill: {"arr_0.npy": npy(d, s, f)})
for _name, _labels in {"labels_wrong_length": npy("<i8", (3,), bytes(24)), "labels_float": npy("<f4", (2,), bytes(8)),
                       "labels_negative": npy("<i8", (2,), struct.pack("<2q", 1, -5)),
                       "labels_2d": npy("<i8", (2, 1), bytes(16))}.items():
    _npz_case(_name, lambda _, lab=_labels: {"arr_0.npy": _IMAGES, "arr_1.npy": lab})
_npz_case("no_arr_0", lambda _: {"arr_1.npy": npy("<i8", (2,), bytes(16))})
_npz_case("member_not_npy", lambda _: {"arr_0.npy": _IMAGES, "notes.txt": b"hello"})
_npz_case("header_declares_3tib", lambda _: {"arr_0.npy": npy("|u1", (2**20, 1024, 1024, 3), bytes(64))})
_VALID_NPZ = npz({"arr_0.npy": _IMAGES})
for _cut in (0.25, 0.5, 0.9):
    _file("samples", f"truncated_{int(_cut * 100)}", lambda _, c=_cut: _VALID_NPZ[: int(len(_VALID_NPZ) * c)],
          "samples", ".npz")
_file("samples", "not_a_zip", lambda _: bytes(range(256)) * 4, "samples", ".npz")
_file("samples", "npy_named_npz", lambda _: _IMAGES, "samples", ".npz")
_file("samples", "pickle_named_npz", _os_system_pickle, "samples", ".npz")
_file("samples", "unknown_method", lambda _: build_zip([Member("arr_0.npy", _IMAGES, 99)]), "samples", ".npz")


def _npz_bomb(_: pathlib.Path) -> bytes:
    """1 MB whose arr_0 inflates to 1 GiB of black images."""
    header = npy("|u1", (4096, 512, 512, 1), b"")
    payload, crc = deflate_zeros(1 << 30, header)
    return build_zip([Member("arr_0.npy", payload, zipfile.ZIP_DEFLATED, size=len(header) + (1 << 30), crc=crc)])


_file("samples", "deflated_bomb_1gib", _npz_bomb, "samples", ".npz")


def _folder(category: str, name: str, reader: str, files: Callable[[pathlib.Path], dict[str, bytes]]) -> None:
    """A case that is the folder ``data`` of ``files(case folder)`` (a name ending in / is a
    folder), beside ``outside.png``, where the entries that escape ``data`` point."""
    def make(folder: pathlib.Path, sentinels: pathlib.Path) -> pathlib.Path:
        for relative, data in files(folder).items():
            path = folder / "data" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if relative.endswith("/"):
                path.mkdir(exist_ok=True)
            else:
                path.write_bytes(data)
        (folder / "outside.png").write_bytes(png(4, 4))
        return folder / "data"

    CASES.append(Case(category, name, reader, make))


_SHARD = {"arr_0.npy": _IMAGES, "index.npy": npy("<i8", (2,), struct.pack("<2q", 0, 1))}
for _name, _files in {
    "settings_not_json": {"samples_000000000.npz": npz(_SHARD), "settings.json": b"{num_samples: 2"},
    "settings_a_list": {"samples_000000000.npz": npz(_SHARD), "settings.json": b"[2]"},
    "settings_without_step": {"samples_000000000.npz": npz(_SHARD), "settings.json": b'{"num_samples": 2}'},
    "shard_object_index": {"samples_000000000.npz": npz({**_SHARD, "index.npy": npy("|O", (2,), proto2(NONE))})},
    "shard_without_index": {"samples_000000000.npz": npz({"arr_0.npy": _IMAGES})},
    "shards_of_two_sizes": {"samples_000000000.npz": npz(_SHARD), "samples_000000002.npz": npz(
        {"arr_0.npy": npy("|u1", (2, 8, 8, 3), bytes(384)), "index.npy": npy("<i8", (2,), struct.pack("<2q", 2, 3))})},
}.items():
    _folder("samples", f"folder_{_name}", "samples", lambda _, f=_files: f)

# --- images: files that do not decode, or declare more pixels than they can hold -------------------

@functools.cache
def _png_bomb() -> bytes:
    """12,000 x 12,000 black pixels in 140 KB: Pillow would allocate 144 MB for them, 432 MB in RGB."""
    return png(12_000, 12_000, zlib.compress(bytes(12_001 * 12_000), 9))


_BAD_IMAGES: dict[str, Callable[[], bytes]] = {
    "corrupt": lambda: b"\x89PNG this is not really a png",
    "zero_bytes": lambda: b"",
    "truncated": lambda: png(64, 64)[:60],
    "bomb_10_gigapixels": lambda: png(100_000, 100_000, b"x"),  # Pillow's own limit raised, uncaught
    "bomb_144_megapixels": _png_bomb,  # under Pillow's limit: only a warning
    "text_named_png": lambda: b"hello, world",
}
for _name, _image in _BAD_IMAGES.items():
    _folder("images", f"evaluator_{_name}", "samples", lambda _, i=_image: {"a.png": png(4, 4), "b.png": i()})
    _folder("images", f"class_folder_{_name}", "image_folder", lambda _, i=_image: {"cat/a.png": png(4, 4),
                                                                                   "dog/b.png": i()})

# --- captions: a captions.jsonl folder with one broken entry -----------------------------------------


def _captions(line: str | bytes, extra: Callable[[], dict[str, bytes]] = dict) -> Callable[[pathlib.Path], dict]:
    """A listing of a good line and ``line``, beside a.png and ``extra()``."""
    good = json.dumps({"file": "a.png", "caption": "a grey square"}).encode()
    bad = line if isinstance(line, bytes) else line.encode()
    return lambda _: {"a.png": png(4, 4), "captions.jsonl": good + b"\n" + bad + b"\n", **extra()}


def _entry(file: object = "a.png", caption: object = "a grey square") -> str:
    return json.dumps({"file": file, "caption": caption})


for _name, _line in {
    "malformed_json": "{not json",
    "missing_file": json.dumps({"caption": "x"}),
    "missing_caption": json.dumps({"file": "a.png"}),
    "caption_number": _entry(caption=5),
    "caption_null": _entry(caption=None),
    "caption_list": _entry(caption=["a", "b"]),
    "caption_object": _entry(caption={"text": "x"}),
    "file_number": _entry(file=5),
    "file_null": _entry(file=None),
    "file_list": _entry(file=["a.png"]),
    "file_empty": _entry(file=""),
    "file_with_nul": _entry(file="a.png\x00.txt"),
    "file_dotdot": _entry(file="../outside.png"),
    "file_dotdot_inside": _entry(file="sub/../../outside.png"),
    "file_windows_drive": _entry(file="C:\\outside.png"),
    "file_name_with_escapes": _entry(file="gone\n\x1b[2J\x1b[31m.png"),  # missing: the message names it
    "nested_100k_deep": "[" * DEEP + "]" * DEEP,
}.items():
    _folder("captions", _name, "caption_folder", _captions(_line, lambda: {"sub/": b""}))
_folder("captions", "not_utf8", "caption_folder", _captions(b'{"file": "a.png", "caption": "\xff\xfe"}'))


_folder("captions", "file_absolute", "caption_folder",
        lambda folder: _captions(_entry(file=str(folder / "outside.png")))(folder))
for _name, _image in _BAD_IMAGES.items():
    _folder("captions", f"image_{_name}", "caption_folder",
            _captions(_entry(file="b.png"), lambda i=_image: {"b.png": i()}))
_folder("captions", "image_is_a_folder", "caption_folder", _captions(_entry(file="b.png"), lambda: {"b.png/": b""}))


def counts() -> dict[str, int]:
    """Hostile files per category."""
    found: dict[str, int] = {}
    for case in CASES:
        found[case.category] = found.get(case.category, 0) + 1
    return found


assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"
