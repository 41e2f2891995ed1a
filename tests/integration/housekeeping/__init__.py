"""Integration tests of the housekeeping service with the provisioner."""
