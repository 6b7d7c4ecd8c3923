"""Build one Dask DataFrame per aspect from byte-range partitions."""

from __future__ import annotations

from dataclasses import dataclass

from functools import partial
from operator import getitem

import dask.dataframe as dd
import pandas as pd
from dask.base import tokenize
from dask.dataframe.dask_expr import from_graph

from mpp_dask.reading.task_sizes import decode_measured_range
from mpp_dask.reading.partitions import FileTally, confirm_range
from mpp_dask.reading.ranges import plan_ranges
from mpp_dask.schema import get_aspect


@dataclass
class AspectFrame:
    """The Dask DataFrame of one aspect file and the tally of its decode.

    ``tally`` is a one-partition frame holding the final FileTally of the file (rows,
    drops, problems); compute it with the stats and read it with
    :func:`tally_from_frame`.

    ``from_cache`` is true when the partitions are read from the partition cache
    instead of being decoded.

    Partitions are in file order. For a time series that is frame order: every frame
    of partition ``i`` is at most every frame of partition ``i + 1`` (the decode
    checks it and fails otherwise), so stats may rely on partition order for time.
    """

    aspect_name: str
    urlpath: str
    file_size: int
    frame: dd.DataFrame
    tally: dd.DataFrame
    from_cache: bool = False


def read_aspect(urlpath: str, aspect_name: str, *, file_size: int, blocksize: int,
                file_token: str = "", skip_on_error: bool = False,
                storage_options: dict | None = None,
                compression: str | None = None) -> AspectFrame:
    """Return the lazily decoded clean table of one aspect file.

    Parameters
    ----------
    urlpath : str
        Path or fsspec URL of the file.
    aspect_name : str
        The aspect the file holds.
    file_size : int
        Size of the file in bytes; the only thing the client reads of it.
    blocksize : int
        Bytes per partition.
    file_token : str
        Identity of the file version (for example its modification time), part of
        every task key so that a changed file never reuses stale results.
    skip_on_error : bool
        Drop invalid rows and count them instead of failing.
    storage_options : dict, optional
        Passed to fsspec.
    compression : str, optional
        fsspec compression of the file (``"gzip"``, ``"zstd"``). A compressed file
        is read whole as one partition, whatever the blocksize, and byte offsets
        in its messages count in the decompressed bytes.

    Returns
    -------
    AspectFrame
    """
    graph, partition_keys, tally_key = build_decode_graph(
        urlpath, aspect_name, file_size=file_size, blocksize=blocksize, file_token=file_token,
        skip_on_error=skip_on_error, storage_options=storage_options, compression=compression)
    return frames_from_graph(urlpath, aspect_name, file_size, graph, partition_keys,
                             (partial(tally_to_frame), tally_key))


def build_decode_graph(urlpath: str, aspect_name: str, *, file_size: int, blocksize: int,
                       file_token: str = "", skip_on_error: bool = False,
                       storage_options: dict | None = None, compression: str | None = None
                       ) -> tuple[dict, list[tuple], tuple]:
    """Build the decode and confirm tasks of one aspect file.

    The arguments are those of :func:`read_aspect`.

    Returns
    -------
    (dict, list of tuple, tuple)
        The graph, the key of each partition (a pandas DataFrame) in file order, and
        the key of the final FileTally of the file.
    """
    token = tokenize(urlpath, file_size, file_token, blocksize, skip_on_error, storage_options,
                     compression)
    common = dict(urlpath=urlpath, aspect_name=aspect_name, file_size=file_size,
                  skip_on_error=skip_on_error, storage_options=storage_options)
    if compression is not None:
        common["compression"] = compression
        blocksize = max(file_size, 1)

    # A plain graph: one decode task per range (in parallel) and one confirm task per
    # range, chained in file order.
    graph: dict = {}
    tally_key = (f"tally-start-{aspect_name}-{token}",)
    graph[tally_key] = (FileTally, urlpath)
    partition_keys = []
    for index, (offset, stop) in enumerate(plan_ranges(file_size, blocksize)):
        decode_key = (f"decode-{aspect_name}-{token}", index)
        confirm_key = (f"confirm-{aspect_name}-{token}", index)
        partition_key = (f"partition-{aspect_name}-{token}", index)
        graph[decode_key] = (partial(decode_measured_range, offset=offset, stop=stop, **common),)
        graph[confirm_key] = (partial(confirm_range, offset=offset, stop=stop, **common),
                              decode_key, tally_key)
        graph[partition_key] = (getitem, confirm_key, 0)
        tally_key = (f"tally-{aspect_name}-{token}", index)
        graph[tally_key] = (getitem, confirm_key, 1)
        partition_keys.append(partition_key)
    return graph, partition_keys, tally_key


def frames_from_graph(urlpath: str, aspect_name: str, file_size: int, graph: dict,
                      partition_keys: list[tuple], tally_task: tuple) -> AspectFrame:
    """Wrap a graph of clean partitions and a task that returns the tally frame.

    ``graph`` is extended with ``tally_task``, whose result must be the one-row
    frame of :func:`tally_to_frame`.
    """
    frame = from_graph(graph, get_aspect(aspect_name).meta(),
                       (None,) * (len(partition_keys) + 1), partition_keys,
                       f"aspect-{aspect_name}")

    # The tally travels as a one-row frame: computing Dask DataFrames together with
    # delayed objects in one call is not supported reliably.
    tally_frame_key = (f"tally-frame-{aspect_name}-{tokenize(partition_keys, tally_task)}", 0)
    graph[tally_frame_key] = tally_task
    tally = from_graph(graph, TALLY_META, (None, None), [tally_frame_key],
                       f"tally-{aspect_name}")
    return AspectFrame(aspect_name, urlpath, file_size, frame, tally)


TALLY_META = pd.DataFrame({"tally": pd.Series([], dtype=object)})


def tally_to_frame(tally: FileTally) -> pd.DataFrame:
    """Return the one-row frame that carries ``tally`` through a Dask computation."""
    column = pd.Series([tally], dtype=object)
    return pd.DataFrame({"tally": column})


def tally_from_frame(frame: pd.DataFrame) -> FileTally:
    """Return the FileTally held by a computed ``AspectFrame.tally``."""
    return frame["tally"].iat[0]
