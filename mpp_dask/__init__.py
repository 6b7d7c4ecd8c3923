"""mpp-dask: replay telemetry (MessagePack aspect files) to clean tables and stats with Dask."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mpp-dask")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
