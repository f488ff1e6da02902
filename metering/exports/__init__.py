"""Finance exports: usage, invoices, invoice lines and settlements as CSV, NDJSON or Parquet.

Rows are read from one database snapshot in chunks and encoded chunk by chunk, so an
export of any size streams in flat memory (``service.export``). The usage dataset, the large
one, is read in bulk: each chunk is an Arrow record batch straight from the driver
(``fetch``), priced and written a column at a time (``usage_columns``, ``columnar``).
"""
