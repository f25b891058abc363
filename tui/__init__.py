"""adaptd terminal dashboard; talks to the daemon over HTTP only."""
