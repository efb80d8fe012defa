"""The paper side by side with this implementation: its published numbers, the counting
conventions, tables from run folders, and the operator comparison on the built-in data."""
