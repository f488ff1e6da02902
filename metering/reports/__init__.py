"""Daily usage reports: one per workspace per UTC day, as JSON and CSV files, indexed."""
