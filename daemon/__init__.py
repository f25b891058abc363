"""adaptd daemon: ingest, projection into DuckDB, query API, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adaptd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
