"""Migration 2: the read models of Neutron security groups (services/api/adapters/
security_groups.py writes them with the group's events; the provisioner reads which load
balancers refer to a group from ``loadbalancer_view``)."""

from __future__ import annotations

from typing import Final

SQL: Final = """
CREATE TABLE IF NOT EXISTS securitygroup_view (
    id text PRIMARY KEY,
    project_id text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS securitygroup_view_project_idx
    ON securitygroup_view (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS securitygroup_rule_view (
    id text PRIMARY KEY,
    security_group_id text NOT NULL,
    project_id text NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS securitygroup_rule_view_group_idx
    ON securitygroup_rule_view (security_group_id);
CREATE INDEX IF NOT EXISTS securitygroup_rule_view_project_idx
    ON securitygroup_rule_view (project_id, created_at, id);
CREATE INDEX IF NOT EXISTS loadbalancer_view_sg_idx
    ON loadbalancer_view USING gin ((body->'vip_sg_ids'));
"""
