"""`make bench`: throughput, latency, memory and per-stage cost of one payflow worker.

Separate from the tests: these machines are shared and noisy, so every figure is printed
next to baselines measured in the same run on the same topic.
"""
