"""Tamper-evident audit: hash chain, signed checkpoints, grants and receipts."""
