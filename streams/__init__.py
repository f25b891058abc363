"""adaptd event stream: event models, the stream log and processors (imports nothing of ours)."""
