"""The LoadBalancer aggregate: ``model`` (state), ``commands``, ``decide`` and ``evolve``.

Import the submodules directly; this package imports nothing so that event payloads may use
the model without a cycle.
"""
