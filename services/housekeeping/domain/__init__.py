"""Housekeeping's pure decisions: the spare pool's plan and the verdict on stranded work."""
