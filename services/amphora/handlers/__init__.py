"""HTTP handlers of the amphora agent and its error middleware."""
