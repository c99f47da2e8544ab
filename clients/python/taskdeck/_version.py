"""The client's version, kept in one place for the package and pyproject.toml."""

__version__ = "0.1.0"
