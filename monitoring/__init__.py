"""Monitoring: inference-log schema, assays and metrics (issue: observability, not built yet)."""
