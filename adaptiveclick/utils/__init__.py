"""Utilities: run metadata for results files, checkpoint conversion, visualisation helpers."""
