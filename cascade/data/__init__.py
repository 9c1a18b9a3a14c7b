"""Interaction data: the synthetic generator, loaders for real data sets, and the parquet layout."""
