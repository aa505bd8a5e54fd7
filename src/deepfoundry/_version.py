"""The package version (one place; the package root and the run-directory writer read it)."""
__version__ = "0.1.0"
