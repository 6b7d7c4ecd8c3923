"""The exception hierarchy of mpp-dask.

Library code raises these; the command line turns them into messages and exit codes.
Each error carries what a user needs to find the problem: the file, the byte offset
where the bad row starts, the row number within the file (counted from 0), the field,
and what was expected versus what was found.
"""

from __future__ import annotations

from dataclasses import dataclass


class MppDaskError(Exception):
    """Base class of every error mpp-dask raises on purpose."""

    exit_code = 1


class ConfigError(MppDaskError):
    """Invalid settings, options or plugin declarations."""

    exit_code = 2


class SchemaError(MppDaskError):
    """A table does not match the columns or dtypes the schema declares."""

    exit_code = 3


class OutputError(MppDaskError):
    """The output could not be written or committed."""

    exit_code = 5


class CacheEntryError(MppDaskError):
    """An entry of the partition cache cannot be read, so its aspect file must be decoded again.

    Parameters
    ----------
    entry_urlpath : str
        The entry folder.
    reason : str
        What is wrong with it.
    """

    def __init__(self, entry_urlpath: str, reason: str):
        self.entry_urlpath = entry_urlpath
        self.reason = reason
        super().__init__(f"cache entry {entry_urlpath} is corrupt: {reason}")

    def __reduce__(self):
        # Dask ships exceptions from workers to the client by pickling them.
        return (type(self), (self.entry_urlpath, self.reason))


class ClusterError(MppDaskError):
    """The Dask cluster could not be started or reached."""

    exit_code = 6


@dataclass(frozen=True)
class RowProblem:
    """One violation found while decoding: where it is and what is wrong."""

    offset: int
    row: int | None
    reason: str
    field: str | None = None
    expected: str | None = None
    found: str | None = None

    def describe(self) -> str:
        """Return the violation as one line of text."""
        row = "row ?" if self.row is None else f"row {self.row}"
        where = f"byte offset {self.offset}, {row}"
        if self.field is not None:
            where += f", field {self.field}"
        detail = self.reason
        if self.expected is not None:
            detail += f": expected {self.expected}"
            if self.found is not None:
                detail += f", found {self.found}"
        return f"{where}: {detail}"


class DecodeError(MppDaskError):
    """An aspect file holds bytes that are not valid rows of its schema.

    Parameters
    ----------
    path : str
        The aspect file.
    problems : list of RowProblem
        The violations found, in file order. Only the first ``shown`` are listed in
        the message; ``total`` counts all of them.
    total : int, optional
        Number of violations found, when more were found than are listed.
    """

    exit_code = 4
    shown = 10

    def __init__(self, path: str, problems: list[RowProblem], total: int | None = None):
        self.path = path
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total
        super().__init__(self._message())

    @property
    def first(self) -> RowProblem:
        """The first violation in file order."""
        return self.problems[0]

    def _message(self) -> str:
        lines = [f"invalid data in {self.path}: {self.first.describe()}"]
        for problem in self.problems[1:self.shown]:
            lines.append(f"  also {problem.describe()}")
        hidden = self.total - min(len(self.problems), self.shown)
        if hidden > 0:
            lines.append(f"  and {hidden} more problems of this file")
        return "\n".join(lines)

    def __reduce__(self):
        # Dask ships exceptions from workers to the client by pickling them.
        return (type(self), (self.path, self.problems, self.total))


class FrameOrderError(DecodeError):
    """Frames decrease inside an aspect file, which breaks the time-order assumption."""
