"""Fulcrum package."""
