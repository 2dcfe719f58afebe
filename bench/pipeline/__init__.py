"""Paced end-to-end benchmark: real reports posted at fixed rates, followed to the staff stream.

`python -m bench.pipeline.run --help`; bench/README.md describes what it measures.
"""
