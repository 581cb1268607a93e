"""Datasets: PointLLM-format loaders, ModelNet40, the built-in procedural 3D dataset, collation."""
