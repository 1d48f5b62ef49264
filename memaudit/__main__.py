"""``python -m memaudit``: the same command line as ``memaudit``."""

from memaudit.cli.app import main

main()
