"""Migration 6: one role per service, each granted only what its service does.

``fulcrum_api``, ``fulcrum_provisioner``, ``fulcrum_health`` and ``fulcrum_housekeeping`` are
created (without login) when missing; a deployment gives them a login and a password
(``deploy/local/postgres_roles.py``) and each service connects as its own. Every table of the
schema is readable and writable by every service role (``SELECT, INSERT, UPDATE, DELETE``),
except:

- ``events``: ``SELECT`` and ``INSERT`` only; besides, the baseline's trigger refuses any
  ``UPDATE`` or ``DELETE`` whoever asks (the owner included), and one more here ``TRUNCATE``;
- the key manager's tables (``secrets``, ``secret_containers``, ``secret_container_refs``):
  the API and the provisioner only; health and housekeeping cannot read sealed secrets;
- ``schema_migrations``: ``SELECT`` only (services check the version; the owner migrates).

Nothing is granted to ``PUBLIC``. A later migration adding a table grants it explicitly.
"""

from __future__ import annotations

from typing import Final

SQL: Final = """
DO $$
DECLARE
    service text;
BEGIN
    FOREACH service IN ARRAY ARRAY['fulcrum_api', 'fulcrum_provisioner', 'fulcrum_health',
                                   'fulcrum_housekeeping'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = service) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', service);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by another database's migration
            END;
        END IF;
    END LOOP;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public
    TO fulcrum_api, fulcrum_provisioner, fulcrum_health, fulcrum_housekeeping;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public
    TO fulcrum_api, fulcrum_provisioner, fulcrum_health, fulcrum_housekeeping;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public
    TO fulcrum_api, fulcrum_provisioner, fulcrum_health, fulcrum_housekeeping;

REVOKE UPDATE, DELETE, TRUNCATE ON events
    FROM fulcrum_api, fulcrum_provisioner, fulcrum_health, fulcrum_housekeeping;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations
    FROM fulcrum_api, fulcrum_provisioner, fulcrum_health, fulcrum_housekeeping;
REVOKE ALL ON secrets, secret_containers, secret_container_refs
    FROM fulcrum_health, fulcrum_housekeeping;

CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_insert_only();
"""
