"""Tell Dask how many bytes the reader's task results contain.

A Dask worker measures every task result with :func:`dask.sizeof.sizeof`. For a
type it does not know, that falls back to ``sys.getsizeof``, which counts only the
Python object and none of the arrays it refers to. A decoded 64 MiB range of
unit_positions contains a frame of about 215 MB, which would otherwise count as
about 100 bytes. The worker would then neither spill decoded ranges nor pause when
they pile up, and the scheduler would place the confirm task of a range without
regard to where its frame is.

Importing this module registers the sizes. The decode tasks call
:func:`decode_measured_range` from here, so a worker imports the module when it
receives its first decode task, before it measures any decoded range. Dask's
``dask.sizeof`` entry point would also reach workers, but dask 2026.8 loads
those entry points unguarded while it is imported. A package that is listed but
fails to import would then make ``import dask`` itself fail.
"""

from __future__ import annotations

import sys

from dask.sizeof import sizeof as dask_sizeof

from mpp_dask.reading.decode import DecodedRange, decode_range
from mpp_dask.reading.partitions import FileTally


def register_sizeof(sizeof) -> None:
    """Register the sizes of :class:`DecodedRange` and :class:`FileTally` with ``sizeof``.

    Parameters
    ----------
    sizeof : dask.utils.Dispatch
        The dispatcher :data:`dask.sizeof.sizeof`.
    """

    @sizeof.register(DecodedRange)
    def _decoded_range_size(decoded: DecodedRange) -> int:
        return sys.getsizeof(decoded) + sizeof(decoded.frame) + sizeof(decoded.problems)

    @sizeof.register(FileTally)
    def _file_tally_size(tally: FileTally) -> int:
        return sys.getsizeof(tally) + sizeof(tally.problems)


register_sizeof(dask_sizeof)


def decode_measured_range(urlpath: str, **options) -> DecodedRange:
    """Decode a byte range with :func:`~mpp_dask.reading.decode.decode_range`.

    The decode tasks call this function rather than ``decode_range``, so that
    every worker that runs them has imported the size registration above.
    """
    return decode_range(urlpath, **options)
