"""A static pass over a pickle's opcodes, made before the unpickler builds anything from them.

The C unpickler trusts the numbers in its stream: BINBYTES8 allocates the length it reads before
reading, LONG_BINPUT grows the memo table to twice the slot it names (a 10-byte pickle can ask for
gigabytes), and hashing a tuple nested 100,000 deep (a dict key) overflows the C stack and kills
the process. ``pickletools.genops`` reads every argument from the bytes actually present, so
walking the opcodes with it first refuses all of these with a sentence: the unpickler then only
sees a stream whose lengths fit in the file, whose memo grows one slot per store, and whose
containers nest at most ``MAX_DEPTH`` deep. The stack is tracked as nesting depths only; what the
objects are is the unpickler's ``find_class`` and ``persistent_load``'s business.
"""

from __future__ import annotations

import io
import pickletools
from typing import Callable

MAX_DEPTH = 1000

# Opcodes no PyTorch writer emits, each of which reaches something outside the pickle: the copyreg
# extension registry, or out-of-band buffers.
_REFUSED = {"EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}
# Opcodes that add to the container below their arguments (its depth grows by theirs, not by one).
_GROWS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_STORES = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_LOADS = {"GET", "BINGET", "LONG_BINGET"}


class Refused(Exception):
    """Why an untrusted file is refused: the rest of a sentence that begins with the file's name."""


def shown(text: object, limit: int = 80) -> str:
    """``text`` (a name read from a file) as printable ASCII, cut to ``limit`` characters: a name
    carrying newlines or terminal escapes must not rewrite the message or the terminal."""
    if type(text) is int and abs(text).bit_length() > 64:  # str() of a huge int is slow, or refused
        text = f"a {abs(text).bit_length()}-bit number"
    text = str(text) if text is None or type(text) in (str, int, float, bool) else f"<{type(text).__name__}>"
    cut = text[:limit]
    return ascii(cut)[1:-1] + ("..." if len(text) > limit else "")


def scan_pickle(stream: io.BytesIO, check_global: Callable[[str, str], None]) -> None:
    """Walks one pickle from ``stream``'s position to its STOP and puts the position back.

    Raises ``Refused`` for a truncated or malformed stream, an opcode from ``_REFUSED``, a memo slot
    stored out of order, containers nested deeper than ``MAX_DEPTH``, or a GLOBAL / INST name that
    ``check_global(module, name)`` refuses (STACK_GLOBAL's names come from the stack and are left
    to ``find_class``).
    """
    start = stream.tell()
    end = stream.seek(0, io.SEEK_END)  # not getbuffer(), which copies a BytesIO made from bytes
    stream.seek(start)
    stack: list[int] = []  # the nesting depth of each object on the unpickler's stack
    marks: list[int] = []
    memo: dict[int, int] = {}
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            _step(opcode, arg, pos, end, stack, marks, memo, check_global)
    except (ValueError, OverflowError) as error:  # genops: truncated, unknown opcode, bad argument
        raise Refused(f"is not a readable pickle ({shown(str(error), 120)}); it is damaged or truncated") from None
    stream.seek(start)


def _step(opcode: pickletools.OpcodeInfo, arg: object, pos: int, end: int, stack: list[int], marks: list[int],
          memo: dict[int, int], check_global: Callable[[str, str], None]) -> None:
    name = opcode.name
    if name in _REFUSED:
        raise Refused(f"uses the pickle opcode {name}, which no PyTorch file contains")
    if name in ("GLOBAL", "INST"):
        module, _, attribute = str(arg).partition(" ")
        check_global(module, attribute)
    if name == "FRAME" and int(arg) > end - pos:
        raise Refused(f"declares a pickle frame of {arg} bytes at byte {pos}, past its end; it is damaged")
    if name == "MARK":
        marks.append(len(stack))
        return
    before = opcode.stack_before
    if pickletools.markobject in before:
        if not marks:
            raise Refused(f"pops a pickle mark that was never set (byte {pos}); it is damaged")
        bottom = marks.pop() - before.index(pickletools.markobject)
    else:
        bottom = len(stack) - len(before)
    if bottom < 0 or (marks and bottom < marks[-1]):
        raise Refused(f"pops more of the pickle stack than it pushed (byte {pos}); it is damaged")
    popped = stack[bottom:]
    del stack[bottom:]
    if name in _STORES:
        _store(memo, len(memo) if name == "MEMOIZE" else int(arg), popped if name == "MEMOIZE" else stack, pos)
    if name in _LOADS:
        if arg not in memo:
            raise Refused(f"reads pickle memo slot {arg} that it never stored (byte {pos}); it is damaged")
        stack.append(memo[arg])
        return
    depth = _depth(name, popped)
    if depth > MAX_DEPTH:
        raise Refused(f"nests containers more than {MAX_DEPTH} levels deep, which no weights file does")
    stack.extend([depth] * len(opcode.stack_after))


def _store(memo: dict[int, int], slot: int, stack: list[int], pos: int) -> None:
    if not stack:
        raise Refused(f"stores an empty pickle stack in the memo (byte {pos}); it is damaged")
    if slot > len(memo):  # the unpickler would size its memo table by the slot, not by the file
        raise Refused(f"stores pickle memo slot {slot} out of order (byte {pos}); every pickler numbers "
                      "them 0, 1, 2, ...")
    memo[slot] = stack[-1]


def _depth(name: str, popped: list[int]) -> int:
    """The nesting depth of what an opcode pushes, from the depths of what it popped."""
    if name in ("DUP", "MEMOIZE") or not popped:
        return popped[0] if popped else 0
    if name in _GROWS:
        return max(popped[0], 1 + max(popped[1:], default=-1))
    return 1 + max(popped)
