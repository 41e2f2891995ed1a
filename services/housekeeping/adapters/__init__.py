"""Adapters of the housekeeping service: its Postgres queries."""
