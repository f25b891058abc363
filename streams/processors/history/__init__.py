"""The performance-history processor: windows per (tenant, program, module, route, model), its state and latency sketch."""
