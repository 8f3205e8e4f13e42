"""The members of a PyTorch zip, read without trusting the sizes its headers declare.

A zip's headers are written by whoever made the file: a 2 MB member may inflate to 2 GiB, two
entries may point at the same bytes, and a member may use a compression method no PyTorch writer
uses. ``torch.save`` stores every member uncompressed, so this reader takes stored members (whose
bytes are all in the file: together they may not exceed its size) and, for files re-packed with
``zip``, deflated ones (which may inflate at most ``INFLATE_RATIO``-fold, plus a small allowance).
Each read compares the declared size with what the caller needs *before* reading, and reads through
a bounded stream into a buffer of exactly that size.
"""

from __future__ import annotations

import re
import zipfile

import numpy as np

from diffcorrupt.weights.pickle_scan import Refused, shown

INFLATE_RATIO = 100
INFLATE_ALLOWANCE = 1 << 20  # bytes any file may inflate to, whatever its size (small zero tensors)
_CHUNK = 1 << 20
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_UNSAFE_NAME = re.compile(r"(^|/)\.\.(/|$)|^[/\\]|\\|^[A-Za-z]:")


class MemberReader:
    """Reads members of one archive, within the budgets that the archive's size allows."""

    def __init__(self, archive: zipfile.ZipFile, file_size: int):
        for info in archive.infolist():
            if _UNSAFE_NAME.search(info.filename):
                raise Refused(f"holds a member named '{shown(info.filename)}' that points outside the archive; "
                              "no PyTorch file does")
        self.archive = archive
        self.names = set(archive.namelist())
        self.stored_left = file_size
        self.inflated_left = INFLATE_RATIO * file_size + INFLATE_ALLOWANCE

    def size(self, name: str) -> int:
        """The size ``name`` declares (0 when it is absent)."""
        return self.archive.getinfo(name).file_size if name in self.names else 0

    def read(self, name: str, nbytes: int) -> np.ndarray:
        """The first ``nbytes`` bytes of member ``name``, as a uint8 array."""
        if name not in self.names:
            raise Refused(f"lacks the member {shown(name)} that its data.pkl refers to; the file is damaged")
        info = self.archive.getinfo(name)
        if info.compress_type not in _METHODS:
            raise Refused(f"compresses {shown(name)} with zip method {info.compress_type}, which this reader does "
                          "not read; torch.save stores members uncompressed, so save the weights with it again")
        if info.flag_bits & 0x1:
            raise Refused(f"encrypts its member {shown(name)}; no PyTorch file is encrypted")
        if info.file_size < nbytes:
            raise Refused(f"has a storage of {info.file_size} bytes where {nbytes} were expected; the file is "
                          "truncated")
        self._spend(info, nbytes)
        buffer = np.empty(nbytes, np.uint8)
        with self.archive.open(info) as member:
            done = 0
            while done < nbytes:
                chunk = member.read(min(_CHUNK, nbytes - done))
                if not chunk:
                    raise Refused(f"ends inside its member {shown(name)}; the file is truncated")
                buffer[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                done += len(chunk)
        return buffer

    def _spend(self, info: zipfile.ZipInfo, nbytes: int) -> None:
        """Takes ``nbytes`` from the budget of the member's method, or refuses before any is read."""
        if info.compress_type == zipfile.ZIP_STORED:
            if nbytes > self.stored_left:
                raise Refused(f"asks for more stored bytes than the file holds (its members overlap at "
                              f"{shown(info.filename)}); it is not a file torch.save wrote")
            self.stored_left -= nbytes
            return
        if nbytes > min(self.inflated_left, INFLATE_RATIO * info.compress_size + INFLATE_ALLOWANCE):
            raise Refused(f"has a member {shown(info.filename)} of {info.compress_size} bytes that would inflate to "
                          f"{nbytes}, more than {INFLATE_RATIO}-fold (a zip bomb); torch.save stores members "
                          "uncompressed, so save the weights with it again")
        self.inflated_left -= nbytes
