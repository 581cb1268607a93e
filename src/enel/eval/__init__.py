"""Evaluation: benchmark generation, offline metrics, the LLM judge, resolution sweep, attention maps, report."""
