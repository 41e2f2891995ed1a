"""Adapters of the provisioner: agent clients, the netns network plumbing, its SQL."""
