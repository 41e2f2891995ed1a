"""Provisioner tests."""
