"""Didomi → Braze preference sync."""

__version__ = "1.0.0"
