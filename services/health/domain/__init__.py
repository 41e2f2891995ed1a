"""The health service's pure core: the status roll-up and the failover breaker (the heartbeat
wire codec is libs.common.heartbeat_codec, shared with the amphora's sender)."""
