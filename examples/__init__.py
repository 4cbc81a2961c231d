"""The fraud demo and small example pipelines."""
