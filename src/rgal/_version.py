"""The package version (one place; read by the CLI and the package)."""

__version__ = "0.2.0"
