"""Cairn: a private, offline coding assistant."""

__version__ = "0.1.0"
