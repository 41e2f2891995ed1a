"""The health service's loops: UDP intake, batched writers, the stale-amphora scan."""
