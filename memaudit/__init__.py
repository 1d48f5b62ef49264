"""memaudit: measure, prove and remove training-data memorization in generative models."""

__version__ = "0.1.0"
