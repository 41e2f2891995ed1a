"""The whole stack on one machine: ``fulcrum up``, ``status`` and ``down``.

``cli`` is the ``fulcrum`` console script and the one composition root that imports every
service. ``up`` starts the stack under supervisord (``supervision``) with Postgres and NATS as
embedded child processes (``embedded``), on the ports of ``ports``, with the settings of
``environment``, in the state dir laid out by ``state``; ``status`` reports it and ``down``
stops it. ``dockerd`` is a private docker engine for the images, compose and the docker tests.
"""
