"""Explainability: alibi explainer adapters (issue: explainability, not built yet)."""
