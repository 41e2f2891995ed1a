"""Housekeeping's periodic jobs and the runner that gives each its lock and interval."""
