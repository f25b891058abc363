"""HTTP: the FastAPI app, bearer-token tenancy, ingest (events, OTLP), query, routing, admin and optimizer routers, and the server lifecycle."""
