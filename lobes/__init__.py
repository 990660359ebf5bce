"""Shared model and data code of the GMP-TL recipe.

Every stage script under ``recipes/`` imports from here; nothing in this package
is copied into a script.
"""
