"""Mutated aspect files decode to rows or fail with a project error, quickly.

Valid files get bytes flipped, cut, inserted or deleted. The reader must then
return a clean table with the schema's dtypes or raise a subclass of MppDaskError.
It must not raise another exception type, hang or use unbounded memory.
"""

from __future__ import annotations

import resource

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import decode_file
from mpp_dask.errors import DecodeError, MppDaskError
from mpp_dask.schema import ASPECTS
from test_reading_invariant import ASPECT_NAMES, aspect_file

# Bytes that MessagePack gives a meaning to, besides random ones: headers of
# arrays, maps, strings, binaries, extensions, floats and the never-used 0xc1.
SPECIAL_BYTES = [0x90, 0x9B, 0x9F, 0x80, 0x8F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4,
                 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCF, 0xD3, 0xD4, 0xD8, 0xD9, 0xDB, 0xDC,
                 0xDD, 0xDE, 0xDF, 0xFF, 0x00]

some_bytes = st.one_of(
    st.binary(min_size=1, max_size=8),
    st.lists(st.sampled_from(SPECIAL_BYTES), min_size=1, max_size=8).map(bytes),
    st.sampled_from([b"\xdd\xff\xff\xff\xff", b"\xdb\x7f\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                     b"\x81\x92\x01\x02\x03", b"\xa2\xff\xfe", b"\xd6\xff\x00\x00\x00\x00"]),
)


def apply_edit(data: bytes, edit: tuple) -> bytes:
    """Return ``data`` with one edit applied. Positions are per mille of its length."""
    kind, per_mille, argument = edit
    position = len(data) * per_mille // 1000
    if kind == "flip":
        if position >= len(data):
            return data
        return data[:position] + bytes([data[position] ^ argument]) + data[position + 1:]
    if kind == "cut":
        return data[:position]
    if kind == "delete":
        return data[:position] + data[position + argument:]
    if kind == "insert":
        return data[:position] + argument + data[position:]
    return data[:position] + argument + data[position + len(argument):]


edits = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 999), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 999), st.none()),
    st.tuples(st.just("delete"), st.integers(0, 999), st.integers(1, 16)),
    st.tuples(st.sampled_from(["insert", "overwrite"]), st.integers(0, 1000), some_bytes),
)


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@settings(max_examples=80, deadline=5000,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_file_fails_cleanly(tmp_path, data):
    aspect_name = data.draw(st.sampled_from(ASPECT_NAMES), label="aspect")
    _, raw = data.draw(aspect_file(aspect_name, max_rows=8), label="file")
    for edit in data.draw(st.lists(edits, min_size=1, max_size=3), label="edits"):
        raw = apply_edit(raw, edit)
    blocksize = data.draw(st.sampled_from([1, 3, 16, 64, 1 << 20]), label="blocksize")
    skip_on_error = data.draw(st.booleans(), label="skip_on_error")
    path = tmp_path / f"{aspect_name}.mpk"
    path.write_bytes(raw)
    rss_before = max_rss_kib()

    try:
        frame, tally = decode_file(path, aspect_name, blocksize=blocksize,
                                   skip_on_error=skip_on_error)
    except MppDaskError as error:
        assert isinstance(error, DecodeError)
        assert error.problems
        assert str(error).startswith(f"invalid data in {path}: byte offset ")
        assert 0 <= error.first.offset <= len(raw)
    else:
        assert dict(frame.dtypes) == ASPECTS[aspect_name].dtypes
        assert tally.rows_kept == len(frame)
        if not skip_on_error:
            assert tally.problems == []

    # Files here are under a kilobyte, so growth of 256 MiB would mean that a decode
    # trusted a corrupt length header.
    assert max_rss_kib() - rss_before < 256 * 1024
