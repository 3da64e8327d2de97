"""openpod: an open GPU pod cloud."""

__version__ = "0.1.0"
