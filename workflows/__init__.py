"""Temporal workflows: the journey interpreter and its deterministic helpers."""
