"""Pipeline stages, one module each, connected by bounded asyncio queues.

    HTTP handlers -> intake queue -> writer (commit, then acknowledge)
    claimer (lease received reports from the database) -> classify queue -> classify stage

Processing state lives in the database, so the queues only move work: a restarted process
re-claims whatever was unfinished once its lease has run out.
"""
