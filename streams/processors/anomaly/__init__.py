"""Anomaly detection: error bursts from raw executions, and the streaming detector over window series with incidents."""
