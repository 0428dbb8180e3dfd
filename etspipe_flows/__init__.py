"""Compositions of both stages that the CLI and the demo share, callable from Python.

Below the CLI and the demo, above the stages: `predict` extracts raw files with a
store's recipe and captions them; `page` writes a result file's HTML page with what
the store recorded. No click here: the CLI parses, these do the work.
"""
