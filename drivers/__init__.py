"""Console drivers behind one narrow async interface (see base.py)."""
