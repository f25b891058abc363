"""The adaptation loop: routing policy, circuit breakers and their configuration.

Everything here is pure (event time, seeded randomness, no I/O); the daemon wires the
policy into the processor runtime and serves its tables.
"""
