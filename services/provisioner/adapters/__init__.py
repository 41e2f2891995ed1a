"""Adapters of the provisioner: clients of the outside world (amphora agents, drivers)."""
