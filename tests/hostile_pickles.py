"""Byte-level writers for the hostile corpus: pickle opcodes, PyTorch files and zips, by hand.

Standard library only, so that a hostile file is exactly the bytes written here (no pickler, no
PyTorch, no zip library deciding what is valid). The opcodes are those of ``pickletools``.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
import zipfile
import zlib

# --- pickle opcodes -------------------------------------------------------------------------------

NONE, TRUE, FALSE, MARK, EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT = b"N", b"\x88", b"\x89", b"(", b")", b"]", b"}"
REDUCE, BUILD, NEWOBJ, NEWOBJ_EX, STACK_GLOBAL, OBJ, BINPERSID = b"R", b"b", b"\x81", b"\x92", b"\x93", b"o", b"Q"
APPEND, SETITEM, TUPLE1, POP, FROZENSET = b"a", b"s", b"\x85", b"0", b"\x91"


def text(value: str) -> bytes:
    """BINUNICODE."""
    data = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    """BININT for 32-bit values, else LONG1."""
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def real(value: float) -> bytes:
    return b"G" + struct.pack(">d", value)


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + b"t"


def lst(*items: bytes) -> bytes:
    return EMPTY_LIST + (MARK + b"".join(items) + b"e" if items else b"")


def dct(*pairs: tuple[bytes, bytes]) -> bytes:
    return EMPTY_DICT + (MARK + b"".join(k + v for k, v in pairs) + b"u" if pairs else b"")


def glob(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0: two lines)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:
    """STACK_GLOBAL (protocol 4: two strings from the stack)."""
    return text(module) + text(name) + STACK_GLOBAL


def put(slot: int) -> bytes:
    return b"r" + struct.pack("<I", slot)


def get(slot: int) -> bytes:
    return b"j" + struct.pack("<I", slot)


def proto2(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def proto4(body: bytes) -> bytes:
    return b"\x80\x04" + body + b"."


# --- what torch.save writes -----------------------------------------------------------------------

WEIGHT = struct.pack("<6f", *(i / 7 for i in range(6)))  # float32 (2, 3)
COUNTS = struct.pack("<7q", *range(7))  # int64 (7,)


def storage(key: bytes, numel: bytes, storage_type: str = "FloatStorage") -> bytes:
    """A persistent storage reference ('storage', type, key, location, numel), already encoded."""
    return tup(text("storage"), glob("torch", storage_type), key, text("cpu"), numel) + BINPERSID


def tensor(storage_ref: bytes, offset: bytes, size: bytes, stride: bytes) -> bytes:
    """_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks), arguments encoded."""
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    return glob("torch._utils", "_rebuild_tensor_v2") + tup(storage_ref, offset, size, stride, FALSE, hooks) + REDUCE


def ints(*values: int) -> bytes:
    return tup(*map(integer, values))


def plain_tensor(key: str = "0", size: tuple[int, ...] = (2, 3), stride: tuple[int, ...] = (3, 1), numel: int = 6,
                 offset: int = 0, storage_type: str = "FloatStorage") -> bytes:
    return tensor(storage(text(key), integer(numel), storage_type), integer(offset), ints(*size), ints(*stride))


def state_dict_pickle() -> bytes:
    """The valid two-tensor state dict of tests/test_torch_pickle.py."""
    return proto2(dct((text("layer.weight"), plain_tensor()),
                      (text("layer.counts"), plain_tensor("1", (3, 2), (1, 3), 7, 1, "LongStorage"))))


def torch_zip(data_pkl: bytes, storages: dict[str, bytes] | None = None, root: str = "archive",
              compression: int = zipfile.ZIP_STORED) -> bytes:
    """A torch.save zip: <root>/data.pkl and <root>/data/<key>, stored as torch stores them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr(f"{root}/data.pkl", data_pkl)
        for key, data in (storages or {}).items():
            archive.writestr(f"{root}/data/{key}", data)
    return buffer.getvalue()


def valid_zip() -> bytes:
    return torch_zip(state_dict_pickle(), {"0": WEIGHT, "1": COUNTS})


def legacy(body: bytes, keys: list[str], storages: list[tuple[int, bytes]]) -> bytes:
    """The pre-1.6 stream: magic, protocol, sys info, the object, its storage keys, then each
    storage as (the int64 element count it declares, its bytes)."""
    header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    tail = b"".join(struct.pack("<q", numel) + data for numel, data in storages)
    return header + body + pickle.dumps(keys, protocol=2) + tail


def valid_legacy() -> bytes:
    return legacy(state_dict_pickle(), ["0", "1"], [(6, WEIGHT), (7, COUNTS)])


# --- zips by hand ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Member:
    """One entry as it will be written: ``payload`` is the bytes in the file (compressed or not);
    ``size`` and ``crc`` are what the headers declare (default: those of the payload); ``at`` makes
    the central directory point at an existing offset instead of writing a local header."""

    name: str
    payload: bytes = b""
    method: int = zipfile.ZIP_STORED
    flag: int = 0
    size: int | None = None
    crc: int | None = None
    at: int | None = None


def local_header(member: Member) -> bytes:
    name = member.name.encode()
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, member.flag, member.method, 0, 0x21, _crc(member),
                       len(member.payload), _size(member), len(name), 0) + name


def build_zip(members: list[Member], prefix: bytes = b"") -> bytes:
    """``prefix`` (local headers and data written by the caller) followed by ``members``."""
    out = bytearray(prefix)
    central = bytearray()
    for member in members:
        offset = len(out) if member.at is None else member.at
        if member.at is None:
            out += local_header(member) + member.payload
        name = member.name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, member.flag, member.method, 0, 0x21,
                               _crc(member), len(member.payload), _size(member), len(name), 0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def _crc(member: Member) -> int:
    return zlib.crc32(member.payload) if member.crc is None else member.crc


def _size(member: Member) -> int:
    return len(member.payload) if member.size is None else member.size


def deflate_zeros(total: int, head: bytes = b"", chunk: int = 1 << 24) -> tuple[bytes, int]:
    """A raw deflate stream that inflates to ``head`` and then ``total`` zero bytes (a multiple of
    ``chunk``), and its CRC. A full flush after each chunk resets the compressor, so the output of
    one chunk repeats: gigabytes cost a copy of a few kilobytes, not a compression."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(chunk)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(total // chunk):
        crc = zlib.crc32(zeros, crc)
    return start + block * (total // chunk) + compressor.flush(), crc


# --- .npy and PNG by hand -------------------------------------------------------------------------

def npy(descr: str, shape: tuple[int, ...], payload: bytes) -> bytes:
    """An .npy file (format 1.0) whose header declares ``descr`` and ``shape``, followed by ``payload``."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}".encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """An 8-bit grey PNG; ``idat`` defaults to the zlib stream of a mid-grey image of that size."""
    if idat is None:
        idat = zlib.compress((b"\x00" + b"\x80" * width) * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
