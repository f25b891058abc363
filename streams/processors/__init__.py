"""Processors: pure, deterministic, keyed functions over event time (see ``base``).

- ``base``: the contract (``SourceProcessor``, ``DerivedProcessor``) and ``EventBatch``.
- ``parse``: log records -> ``EventBatch``; ``windows``: watermarks and lateness.
- ``sketch``: the mergeable latency sketch; ``history``: the performance-history processor.
- ``runtime``: the embedded runtime (snapshots, recovery) and ``rerun`` for replay.

Nothing is imported here, so importing one processor module stays cheap.
"""
