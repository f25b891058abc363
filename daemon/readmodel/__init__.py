"""The read model: DuckDB migrations, the projector (rows and log position in one transaction), queries, and replay from the log."""
