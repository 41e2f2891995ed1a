"""The provisioner's handlers: event consumers and the reconciliation loop."""
