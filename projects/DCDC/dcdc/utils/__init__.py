"""Helpers shared by the entry points (demo.py, tools/): pictures."""
