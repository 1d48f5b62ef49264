"""Proving training: membership inference (``memaudit mia``), dataset inference, copyright traps."""
