"""Which listeners and pools use a key manager object: the guard of secret and container
deletes (run inside their transaction, after the row is locked)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

# A reference ends in the object's UUID (``.../v1/containers/<uuid>`` or the bare id).
_USERS_SQL: Final = """
SELECT kind || ' ' || id FROM (
    SELECT 'listener' AS kind, v.id, jsonb_build_array(
               v.body->'default_tls_container_ref', v.body->'client_ca_tls_container_ref',
               v.body->'client_crl_container_ref')
           || coalesce(v.body->'sni_container_refs', '[]'::jsonb) AS refs, v.body
    FROM listener_view v
    UNION ALL
    SELECT 'pool', v.id, jsonb_build_array(
               v.body->'tls_container_ref', v.body->'ca_tls_container_ref',
               v.body->'crl_container_ref'), v.body
    FROM pool_view v
) users, jsonb_array_elements_text(users.refs) AS ref
WHERE users.body->>'provisioning_status' <> 'DELETED'
  AND lower(right(rtrim(ref, '/'), 36)) = ANY($1::text[])
ORDER BY kind, id
LIMIT 1
"""


async def first_user(conn: asyncpg.Connection, ids: Sequence[str]) -> str | None:
    """``"listener <id>"`` or ``"pool <id>"`` of a live user of any of ``ids``, else None."""
    user: str | None = await conn.fetchval(_USERS_SQL, [i.lower() for i in ids])
    return user
