"""Encode the rows of an aspect to MessagePack with vectorized numpy operations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from mpp_dask.schema import Aspect, Field, RawType

# The integer classes of the MessagePack spec, in this order: int64, int32, int16,
# int8, negative fixint, positive fixint, uint8, uint16, uint32, uint64. A value's
# class index is the number of bounds at or below it. This is the narrowest class,
# the one msgpack-python picks.
_INT_CLASS_BOUNDS = np.array(
    [-(1 << 31), -(1 << 15), -(1 << 7), -32, 0, 1 << 7, 1 << 8, 1 << 16, 1 << 32], dtype=np.int64
)
_INT_CLASS_MARKERS = np.array([0xD3, 0xD2, 0xD1, 0xD0, 0, 0, 0xCC, 0xCD, 0xCE, 0xCF],
                              dtype=np.uint8)
_INT_CLASS_PAYLOAD_BYTES = np.array([8, 4, 2, 1, 0, 0, 1, 2, 4, 8], dtype=np.uint8)

_NIL, _FALSE, _FLOAT32, _FLOAT64 = 0xC0, 0xC2, 0xCA, 0xCB
_FIXARRAY, _ARRAY16 = 0x90, 0xDC
_FIXSTR, _STR8, _STR16, _STR32 = 0xA0, 0xD9, 0xDA, 0xDB


@dataclass
class RowBlock:
    """Consecutive rows of one aspect as columns, ready for :func:`encode_block`.

    Attributes
    ----------
    columns : dict[str, numpy.ndarray]
        Raw field name to values, one entry per field of the aspect: int64 for int
        fields, bool for bool fields, str for str fields.
    nulls : dict[str, numpy.ndarray]
        Raw field name to a bool mask that is True where the value is nil. Fields
        without a mask have no nils.
    floats : dict[str, numpy.ndarray]
        Raw field name to a bool mask that is True where an int field is written as a
        whole-number float (float32 when the value is exact in float32, else float64).
    lengths : numpy.ndarray or None
        Elements written per row. Fields at or past a row's length are left out, as in
        the short rows of real exports. None writes every field.
    """

    columns: dict[str, np.ndarray]
    nulls: dict[str, np.ndarray] = field(default_factory=dict)
    floats: dict[str, np.ndarray] = field(default_factory=dict)
    lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    @staticmethod
    def concat(blocks: list[RowBlock]) -> RowBlock:
        """Return the rows of ``blocks`` in order as one block."""
        if len(blocks) == 1:
            return blocks[0]

        def joined_masks(kind: str) -> dict[str, np.ndarray]:
            masks = [getattr(block, kind) for block in blocks]
            names = {name for block_masks in masks for name in block_masks}
            return {name: np.concatenate([block_masks.get(name, np.zeros(len(block), bool))
                                          for block, block_masks in zip(blocks, masks)])
                    for name in sorted(names)}

        lengths = None
        if any(block.lengths is not None for block in blocks):
            lengths = np.concatenate([
                np.full(len(block), len(block.columns)) if block.lengths is None
                else block.lengths
                for block in blocks])
        columns = {name: np.concatenate([block.columns[name] for block in blocks])
                   for name in blocks[0].columns}
        return RowBlock(columns=columns, nulls=joined_masks("nulls"),
                        floats=joined_masks("floats"), lengths=lengths)

    def rows(self, start: int, stop: int) -> RowBlock:
        """Return rows ``start`` to ``stop`` (exclusive) as a new block."""
        return RowBlock(
            columns={name: values[start:stop] for name, values in self.columns.items()},
            nulls={name: mask[start:stop] for name, mask in self.nulls.items()},
            floats={name: mask[start:stop] for name, mask in self.floats.items()},
            lengths=None if self.lengths is None else self.lengths[start:stop],
        )


def encode_block(aspect: Aspect, block: RowBlock) -> bytes:
    """Encode the rows of a block as concatenated MessagePack arrays.

    Every value gets the narrowest standard encoding, the one msgpack-python's packer
    writes, so ``msgpack.packb(row)`` gives the same bytes for each row. Whole-number
    floats are the exception when they fit float32, because msgpack-python writes
    floats as float64 unless ``use_single_float`` is set.

    Parameters
    ----------
    aspect : Aspect
        The aspect whose field order, raw types and nullability the rows follow.
    block : RowBlock
        The rows as columns.

    Returns
    -------
    bytes
        The rows in file format.

    Raises
    ------
    ValueError
        If the block's columns are not the aspect's fields, a non-nullable field has
        a nil or a row is shorter than the aspect allows.
    """
    _check_block(aspect, block)
    count = len(block)
    if count == 0:
        return b""
    lengths = block.lengths
    if lengths is None:
        lengths = np.full(count, aspect.max_row_length, dtype=np.int64)

    # Each value takes a slot of cells as wide as the widest value of its column.
    # Row bytes are the cells, in row order, that fall within each value's width.
    columns = [_array_header_parts(lengths)]
    widths = [columns[0].widths()]
    for position, fld in enumerate(aspect.fields):
        columns.append(_field_parts(fld, block))
        widths.append(np.where(lengths > position, columns[-1].widths(), 0))

    slots = [column.slot() for column in columns]
    matrix = np.empty((count, sum(slots)), dtype=np.uint8)
    keep = np.empty((count, sum(slots)), dtype=bool)
    offset = 0
    for column, column_widths, slot in zip(columns, widths, slots):
        column.fill(matrix[:, offset:offset + slot])
        keep[:, offset:offset + slot] = np.arange(slot) < column_widths[:, None]
        offset += slot
    return matrix[keep].tobytes()


def _check_block(aspect: Aspect, block: RowBlock) -> None:
    expected = [fld.raw_name for fld in aspect.fields]
    if sorted(block.columns) != sorted(expected):
        raise ValueError(f"{aspect.name}: block columns {sorted(block.columns)} "
                         f"are not the aspect's fields {expected}")
    for fld in aspect.fields:
        if fld.raw_name in block.nulls and not fld.nullable and block.nulls[fld.raw_name].any():
            raise ValueError(f"{aspect.name}: field {fld.raw_name} is not nullable "
                             "but the block has nils in it")
    if block.lengths is not None and len(block) and (
            block.lengths.min() < aspect.min_row_length
            or block.lengths.max() > aspect.max_row_length):
        raise ValueError(f"{aspect.name}: row lengths must be between "
                         f"{aspect.min_row_length} and {aspect.max_row_length}, got "
                         f"{block.lengths.min()} to {block.lengths.max()}")


class _Parts(NamedTuple):
    """Encoded values of one column: a marker byte, then ``size`` payload bytes.

    ``payload`` stores the payload bytes in the high end of a uint64, so its
    big-endian bytes start with them.
    """

    marker: np.ndarray
    payload: np.ndarray
    size: np.ndarray

    def widths(self) -> np.ndarray:
        return 1 + self.size.astype(np.int64)

    def slot(self) -> int:
        return 1 + int(self.size.max())

    def fill(self, cells: np.ndarray) -> None:
        cells[:, 0] = self.marker
        if cells.shape[1] > 1:
            payload_bytes = self.payload.astype(">u8").view(np.uint8).reshape(-1, 8)
            cells[:, 1:] = payload_bytes[:, :cells.shape[1] - 1]


class _StrCells(NamedTuple):
    """Encoded str values of one column, already padded to the widest."""

    cells: np.ndarray
    value_widths: np.ndarray

    def widths(self) -> np.ndarray:
        return self.value_widths

    def slot(self) -> int:
        return self.cells.shape[1]

    def fill(self, cells: np.ndarray) -> None:
        cells[:] = self.cells


def _field_parts(fld: Field, block: RowBlock) -> _Parts | _StrCells:
    values = block.columns[fld.raw_name]
    if fld.raw_type is RawType.STR:
        return _str_cells(values)
    if fld.raw_type is RawType.BOOL:
        parts = _Parts(_FALSE + values.astype(np.uint8), np.zeros(len(values), dtype=np.uint64),
                       np.zeros(len(values), dtype=np.uint8))
    else:
        values = np.asarray(values, dtype=np.int64)
        parts = _int_parts(values)
        if fld.raw_name in block.floats:
            as_float = block.floats[fld.raw_name]
            parts = _Parts(*(np.where(as_float, float_part, int_part)
                             for float_part, int_part in zip(_whole_float_parts(values), parts)))
    if fld.raw_name in block.nulls:
        null = block.nulls[fld.raw_name]
        parts = _Parts(np.where(null, np.uint8(_NIL), parts.marker), parts.payload,
                       np.where(null, np.uint8(0), parts.size))
    return parts


def _int_parts(values: np.ndarray) -> _Parts:
    kind = np.zeros(len(values), dtype=np.int8)
    for bound in _INT_CLASS_BOUNDS:
        kind += values >= bound
    size = _INT_CLASS_PAYLOAD_BYTES[kind]
    # Fixints are the values -32 to 127, whose marker byte is the value itself.
    marker = np.where(size == 0, (values & 0xFF).astype(np.uint8), _INT_CLASS_MARKERS[kind])
    # Shifting the two's complement bits to the top keeps exactly the payload bytes,
    # in order, when the result is written big-endian. A shift of 64 gives 0 in numpy.
    shift = (64 - 8 * size.astype(np.uint64)).astype(np.uint64)
    return _Parts(marker, np.left_shift(values.view(np.uint64), shift), size)


def _whole_float_parts(values: np.ndarray) -> _Parts:
    as_float64 = values.astype(np.float64)
    as_float32 = as_float64.astype(np.float32)
    single = as_float32.astype(np.float64) == as_float64
    single_payload = np.left_shift(as_float32.view(np.uint32).astype(np.uint64), np.uint64(32))
    return _Parts(np.where(single, np.uint8(_FLOAT32), np.uint8(_FLOAT64)),
                  np.where(single, single_payload, as_float64.view(np.uint64)),
                  np.where(single, np.uint8(4), np.uint8(8)))


def _array_header_parts(lengths: np.ndarray) -> _Parts:
    short = lengths <= 15
    return _Parts(np.where(short, (_FIXARRAY | lengths).astype(np.uint8), np.uint8(_ARRAY16)),
                  np.where(short, 0, lengths.astype(np.uint64) << np.uint64(48)).astype(np.uint64),
                  np.where(short, np.uint8(0), np.uint8(2)))


def _str_cells(values: np.ndarray) -> _StrCells:
    # Only start_pos has str fields (one row per player), so strings are encoded
    # value by value.
    encoded = [_str_bytes(str(value)) for value in values]
    widths = np.array([len(item) for item in encoded], dtype=np.int64)
    cells = np.zeros((len(encoded), int(widths.max())), dtype=np.uint8)
    for row, item in enumerate(encoded):
        cells[row, :len(item)] = np.frombuffer(item, dtype=np.uint8)
    return _StrCells(cells, widths)


def _str_bytes(text: str) -> bytes:
    data = text.encode("utf-8")
    size = len(data)
    if size < 32:
        return bytes([_FIXSTR | size]) + data
    if size < 1 << 8:
        return bytes([_STR8, size]) + data
    if size < 1 << 16:
        return bytes([_STR16]) + size.to_bytes(2, "big") + data
    return bytes([_STR32]) + size.to_bytes(4, "big") + data
