"""The health service: receives amphora heartbeats, rolls up operating status, stores stats,
and fails over amphorae that fall silent."""
