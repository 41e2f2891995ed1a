"""Adapters of the health service: its Postgres tables and queries."""
