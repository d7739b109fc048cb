"""Didomi → Braze preference sync."""

__version__ = "2.0.0"
