"""The provisioner's pure decisions: what to build, replace, tear down or undo, without I/O."""
