"""adaptd daemon: ingest, projection into DuckDB, query API, CLI."""
