"""Spend control (CONTRACT 10): cost so far, budgets with alerts, the lifetime guard."""
