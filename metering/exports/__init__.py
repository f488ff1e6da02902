"""Finance exports: usage, invoices, invoice lines and settlements as CSV, NDJSON or Parquet.

Rows are read from one database snapshot in chunks and encoded chunk by chunk, so an
export of any size streams in flat memory (``service.export``).
"""
