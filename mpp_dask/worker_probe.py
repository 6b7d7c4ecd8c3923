"""The function that preflight runs on every worker to report its software versions.

This module is pickled by value (see :mod:`mpp_dask.preflight`), so a worker can
run it even where mpp-dask itself does not import. It must therefore import
nothing but the standard library at module level.
"""

from __future__ import annotations

# Distribution name -> module name of every package whose version must match.
PACKAGES = (
    ("mpp-dask", "mpp_dask"),
    ("dask", "dask"),
    ("distributed", "distributed"),
    ("pandas", "pandas"),
    ("pyarrow", "pyarrow"),
    ("msgpack", "msgpack"),
    ("numpy", "numpy"),
)


def collect_versions() -> dict:
    """Import each package of ``PACKAGES`` and return its version or the import error.

    Returns
    -------
    dict
        ``{"python": "3.11", "versions": {distribution: version or None},
        "errors": {distribution: "ExceptionType: message"}}``. The Python version
        is major.minor, because pickled code only moves between equal minor versions.
    """
    import importlib
    import importlib.metadata
    import sys

    versions: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for distribution, module_name in PACKAGES:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # report any import failure instead of failing the probe
            versions[distribution] = None
            errors[distribution] = f"{type(exc).__name__}: {exc}"
            continue
        version = getattr(module, "__version__", None)
        if not isinstance(version, str):
            version = importlib.metadata.version(distribution)
        versions[distribution] = version
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {"python": python, "versions": versions, "errors": errors}
