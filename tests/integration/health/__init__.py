"""Integration tests of the health service and heartbeat-driven failover."""
