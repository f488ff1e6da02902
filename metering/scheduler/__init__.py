"""Background jobs: billing runs, daily reports, settlement re-checks, webhook delivery.

Each job takes a database lease so that N instances run it once per tick, and is
idempotent by unique constraints, so a lease lost mid-run costs time, not correctness.
"""
