"""Webhooks from a transactional outbox: written with the change, delivered at least once."""
