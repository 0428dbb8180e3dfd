"""The click commands of `etspipe`, one module per command; `pipeline.py` assembles them."""
