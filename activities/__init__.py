"""Temporal activities and the channel adapters they deliver through."""
