"""Probes: reasoning memorization (Knights and Knaves), and more to come (see issue 8)."""
