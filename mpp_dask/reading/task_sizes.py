"""Tell Dask how many bytes the reader's task results hold.

A Dask worker measures every task result with :func:`dask.sizeof.sizeof`. For a
type it does not know, that falls back to ``sys.getsizeof``, which counts only the
Python object and none of the arrays it refers to. A decoded 64 MiB range of
unit_positions contains a frame of about 215 MB, which would otherwise count as
about 100 bytes. The worker would then neither spill decoded ranges nor pause when
they pile up, and the scheduler would place the confirm task of a range without
regard to where its frame is.

Dask calls :func:`register_sizeof` through the ``dask.sizeof`` entry point
(declared in ``pyproject.toml``) when ``dask.sizeof`` is first imported, so every
process that has mpp-dask installed applies it before it measures a task result.
"""

from __future__ import annotations

import sys


def register_sizeof(sizeof) -> None:
    """Register the sizes of the reader's task results with Dask's ``sizeof``.

    The registration is lazy: the reader's modules are imported only when a
    worker first measures an object of a type from the ``mpp_dask`` package, so
    importing Dask stays as cheap as without mpp-dask.

    Parameters
    ----------
    sizeof : dask.utils.Dispatch
        The dispatcher :data:`dask.sizeof.sizeof`.
    """

    @sizeof.register_lazy("mpp_dask")
    def _register_reader_types() -> None:
        from mpp_dask.reading.decode import DecodedRange
        from mpp_dask.reading.partitions import FileTally

        @sizeof.register(DecodedRange)
        def _decoded_range_size(decoded: DecodedRange) -> int:
            return sys.getsizeof(decoded) + sizeof(decoded.frame) + sizeof(decoded.problems)

        @sizeof.register(FileTally)
        def _file_tally_size(tally: FileTally) -> int:
            return sys.getsizeof(tally) + sizeof(tally.problems)
