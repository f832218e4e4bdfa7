"""Reelchain: long videos from short generations."""

__version__ = "0.1.0"
