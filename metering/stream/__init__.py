"""Lifecycle events from an event bus: the NATS JetStream consumer (CONTRACT §2.1)."""
