"""The API's use cases: validated input becomes commands to the LoadBalancer aggregate."""
