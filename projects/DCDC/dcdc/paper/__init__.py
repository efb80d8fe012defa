"""The paper side by side with this implementation: its published numbers (:mod:`.results`), the
counting conventions (:mod:`.counting`), tables from run folders and counts (:mod:`.tables`, run
by :mod:`.cli` for tools/paper_tables.py, tools/analyze_model.py, tools/param_table.py), and the
operator comparison on the built-in data (:mod:`.comparison`, ``make compare``)."""
