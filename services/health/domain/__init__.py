"""The health service's pure core: the heartbeat wire codec, the status roll-up, the breaker."""
