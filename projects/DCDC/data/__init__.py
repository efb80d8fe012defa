"""Datasets shipped with DCDC (filled in by the built-in data work)."""
