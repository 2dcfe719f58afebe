"""Fan-out benchmark (issue 15): intake latency with 0, 1,000 and 10,000 open public streams.

`python -m bench.streams.run --help`; bench/README.md describes what it measures.
"""
