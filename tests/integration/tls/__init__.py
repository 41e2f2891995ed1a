"""TLS termination, certificates and the key manager, end to end on real servers."""
