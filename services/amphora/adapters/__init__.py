"""Adapters of the amphora agent: HAProxy (process and runtime API) and TLS."""
