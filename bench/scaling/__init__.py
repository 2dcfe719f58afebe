"""Scaling benchmark: intake and live-stream delivery at 1, 2 and 4 processes behind HAProxy.

`python -m bench.scaling.run --help`; the module docstring of run.py says what it measures.
"""
