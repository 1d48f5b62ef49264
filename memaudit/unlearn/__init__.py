"""Unlearning: remove memorized sequences (``run``), and prove they are gone (``evaluate``).

The methods registry is ``unlearn.methods.METHODS``; this package imports nothing itself, so its
config module loads without torch.
"""
