"""The package version, in a module of its own: ``memaudit --version`` and the records that
name the version read it without importing the package's API.
"""

__version__ = "0.1.0"
