"""Plan the byte ranges of aspect files from their sizes alone."""

from __future__ import annotations

from dask.utils import parse_bytes


def normalize_blocksize(blocksize: int | str) -> int:
    """Return ``blocksize`` in bytes; strings such as ``"64 MiB"`` are parsed.

    Raises
    ------
    ValueError
        If the size is not a positive number of bytes.
    """
    size = parse_bytes(blocksize) if isinstance(blocksize, str) else int(blocksize)
    if size < 1:
        raise ValueError(f"blocksize must be at least 1 byte, got {blocksize!r}")
    return size


def plan_ranges(file_size: int, blocksize: int) -> list[tuple[int, int]]:
    """Cut a file of ``file_size`` bytes into ranges of ``blocksize`` bytes.

    A 0-byte file still gets one (empty) range, so that its aspect is a frame with
    zero rows rather than no frame at all.

    Examples
    --------
    >>> plan_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    >>> plan_ranges(0, 4)
    [(0, 0)]
    """
    if file_size == 0:
        return [(0, 0)]
    return [(offset, min(offset + blocksize, file_size))
            for offset in range(0, file_size, blocksize)]
