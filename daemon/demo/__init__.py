"""``adaptd demo`` (run as ``python -m adaptd.daemon.demo``): a scripted world that shows the
whole loop against a real daemon: a mock OpenAI-compatible provider, DSPy programs on the
SDK, and a story of faults.  Also the routing benchmark's provider and the offline task
of the re-optimization tests (``toy``).  A client of the daemon like any other: it talks
to it over HTTP only."""
