"""adaptd client SDK: batching event export and integrations (imports only streams.events)."""
