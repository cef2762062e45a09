"""Rank: transferability of source models before training."""
