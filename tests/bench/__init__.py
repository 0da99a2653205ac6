"""The benchmark suite (``make bench``): reaction, jitter, cost and rate of cryod."""
