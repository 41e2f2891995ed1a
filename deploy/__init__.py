"""How Fulcrum is deployed: ``deploy.local`` runs the whole stack on one machine (``fulcrum up``)
and holds the private docker engine; ``deploy/images.py`` builds the images that
``deploy/compose.yaml`` runs."""
