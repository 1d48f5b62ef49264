"""The ``memaudit`` command line: one thin module per command group, assembled in ``cli.app``."""
