"""Migration 7: indexes in the default list order, so a page costs the same at any fleet size.

A list without a project (an admin's, or any under noauth) is ordered by ``(created_at, id)``
(services/api/adapters/views.py, ``list_page``); without an index in that order Postgres reads
and sorts the whole table for every page. The load balancer indexes are partial on the live
condition the list applies (``provisioning_status`` other than DELETED), so pages skip the
deleted load balancers kept until purge without reading them.
"""

from __future__ import annotations

from typing import Final

_CHILD_VIEWS: Final = (
    "listener_view",
    "pool_view",
    "member_view",
    "healthmonitor_view",
    "l7policy_view",
    "l7rule_view",
)

SQL: Final = """
CREATE INDEX IF NOT EXISTS loadbalancer_view_live_order_idx ON loadbalancer_view (created_at, id)
    WHERE body->>'provisioning_status' <> 'DELETED';
CREATE INDEX IF NOT EXISTS loadbalancer_view_live_project_idx
    ON loadbalancer_view (project_id, created_at, id)
    WHERE body->>'provisioning_status' <> 'DELETED';
""" + "".join(
    f"CREATE INDEX IF NOT EXISTS {view}_order_idx ON {view} (created_at, id);\n"
    for view in _CHILD_VIEWS
)
