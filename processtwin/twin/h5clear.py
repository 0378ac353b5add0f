"""Clear an HDF5 file's consistency flags after a crashed writer (what ``h5clear -s``
does), so that a restarted twin can append to the same historian.

A writer in single-writer/multiple-reader (SWMR) mode keeps the file readable at every
instant: a ``kill -9`` leaves it consistent, and readers open it. It also leaves the
superblock's *file consistency flags* set, and HDF5 then refuses to open the file for
writing again. The flags are one byte of the version-2/3 superblock, which is protected by
a Jenkins lookup3 checksum (HDF5 file format specification, "Superblock" and "Checksum");
this module resets the byte, moves the end-of-allocation address to the end of the file
(the crashed writer's last allocations are past the stored one) and rewrites the checksum.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["clear_status_flags", "lookup3"]

_M = 0xFFFFFFFF
_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` of ``data`` (HDF5's metadata checksum)."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M
    i = 0

    def word(j: int) -> int:
        return data[j] | data[j + 1] << 8 | data[j + 2] << 16 | data[j + 3] << 24

    while n > 12:
        a = (a + word(i)) & _M
        b = (b + word(i + 4)) & _M
        c = (c + word(i + 8)) & _M
        a = (a - c) & _M; a ^= _rot(c, 4); c = (c + b) & _M          # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 6); a = (a + c) & _M          # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 8); b = (b + a) & _M          # noqa: E702
        a = (a - c) & _M; a ^= _rot(c, 16); c = (c + b) & _M         # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 19); a = (a + c) & _M         # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 4); b = (b + a) & _M          # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = data[i:i + n] + bytes(12 - n)
    a = (a + (tail[0] | tail[1] << 8 | tail[2] << 16 | tail[3] << 24)) & _M
    b = (b + (tail[4] | tail[5] << 8 | tail[6] << 16 | tail[7] << 24)) & _M
    c = (c + (tail[8] | tail[9] << 8 | tail[10] << 16 | tail[11] << 24)) & _M
    c ^= b; c = (c - _rot(b, 14)) & _M                               # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _M                               # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _M                               # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _M                               # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _M                                # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _M                               # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _M                               # noqa: E702
    return c


def _superblock(fh: object) -> tuple[int, bytes]:
    """Offset and bytes of the superblock (searched at 0, 512, 1024, … as the format
    allows a user block)."""
    size = os.fstat(fh.fileno()).st_size  # type: ignore[attr-defined]
    off = 0
    while off < max(size, 1):
        fh.seek(off)  # type: ignore[attr-defined]
        head = fh.read(12)  # type: ignore[attr-defined]
        if head[:8] == _SIGNATURE:
            return off, head
        off = 512 if off == 0 else off * 2
    raise OSError("not an HDF5 file (no superblock signature)")


def clear_status_flags(path: str | Path) -> bool:
    """Reset the file consistency flags of a version-2/3 superblock.

    Parameters
    ----------
    path : str or Path
        The HDF5 file (not open anywhere).

    Returns
    -------
    bool
        Whether flags were set (and are now cleared).

    Raises
    ------
    OSError
        Not an HDF5 file, a superblock of another version, or a checksum that does not
        match before the change (the file is then left untouched).
    """
    with open(path, "r+b") as fh:
        off, head = _superblock(fh)
        version, size_off = head[8], head[9]
        if version not in (2, 3):
            raise OSError(f"{path}: superblock version {version}; only versions 2 and 3 "
                          "(libver 'latest') carry consistency flags that can be cleared")
        n = 12 + 4 * size_off
        fh.seek(off)
        block = bytearray(fh.read(n + 4))
        stored = int.from_bytes(block[n:n + 4], "little")
        if lookup3(bytes(block[:n])) != stored:
            raise OSError(f"{path}: superblock checksum does not match; not changed")
        if block[11] == 0:
            return False
        block[11] = 0
        # a crashed SWMR writer leaves the end-of-allocation address behind the data it
        # wrote: move it to the end of the file (as ``h5clear --increment``)
        at = 12 + 2 * size_off
        eoa = int.from_bytes(block[at:at + size_off], "little")
        end = os.fstat(fh.fileno()).st_size - off
        block[at:at + size_off] = max(eoa, end).to_bytes(size_off, "little")
        block[n:n + 4] = lookup3(bytes(block[:n])).to_bytes(4, "little")
        fh.seek(off)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return True
