"""Migration 1: every table of release 0.1.0, written out once.

Each statement finds its object already there on a database that release made (its services
created their tables at start with the same statements), so on such a database the step only
drops that release's fingerprint table ``schema_applied``. Which code writes each table is
noted beside it; the columns are what that code reads and writes.
"""

from __future__ import annotations

from typing import Final

SQL: Final = """
-- The event store (libs/common/eventstore.py): insert-only events and the transactional outbox.
CREATE TABLE IF NOT EXISTS events (
    global_position bigserial UNIQUE,
    stream_id text NOT NULL,
    stream_version int NOT NULL CHECK (stream_version > 0),
    event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL,
    schema_version int NOT NULL,
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, stream_version)
);
CREATE OR REPLACE FUNCTION events_insert_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'events are insert-only'; END $$;
CREATE OR REPLACE TRIGGER events_insert_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_insert_only();
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    subject text NOT NULL,
    body jsonb NOT NULL,
    traceparent text
);

-- The bus's consumers (libs/common/bus.py): handled messages and dead letters.
CREATE TABLE IF NOT EXISTS processed_messages (
    consumer text NOT NULL,
    event_id uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id bigserial PRIMARY KEY,
    consumer text NOT NULL,
    subject text NOT NULL,
    event_id text,
    reason text NOT NULL,
    body text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The read models (libs/common/readmodel.py): a load balancer and its children, one table per
-- kind; VIP addresses claimed per subnet; amphorae.
CREATE TABLE IF NOT EXISTS loadbalancer_view (
    id text PRIMARY KEY,
    lb_id text NOT NULL,
    parent_id text NOT NULL,
    project_id text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS loadbalancer_view_lb_idx ON loadbalancer_view (lb_id);
CREATE INDEX IF NOT EXISTS loadbalancer_view_parent_idx ON loadbalancer_view (parent_id);
CREATE INDEX IF NOT EXISTS loadbalancer_view_project_idx
    ON loadbalancer_view (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS listener_view (
    id text PRIMARY KEY,
    lb_id text NOT NULL,
    parent_id text NOT NULL,
    project_id text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS listener_view_lb_idx ON listener_view (lb_id);
CREATE INDEX IF NOT EXISTS listener_view_parent_idx ON listener_view (parent_id);
CREATE INDEX IF NOT EXISTS listener_view_project_idx
    ON listener_view (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS pool_view (
    id text PRIMARY KEY,
    lb_id text NOT NULL,
    parent_id text NOT NULL,
    project_id text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS pool_view_lb_idx ON pool_view (lb_id);
CREATE INDEX IF NOT EXISTS pool_view_parent_idx ON pool_view (parent_id);
CREATE INDEX IF NOT EXISTS pool_view_project_idx ON pool_view (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS member_view (
    id text PRIMARY KEY,
    lb_id text NOT NULL,
    parent_id text NOT NULL,
    project_id text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS member_view_lb_idx ON member_view (lb_id);
CREATE INDEX IF NOT EXISTS member_view_parent_idx ON member_view (parent_id);
CREATE INDEX IF NOT EXISTS member_view_project_idx ON member_view (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS healthmonitor_view (
    id text PRIMARY KEY,
    lb_id text NOT NULL,
    parent_id text NOT NULL,
    project_id text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS healthmonitor_view_lb_idx ON healthmonitor_view (lb_id);
CREATE INDEX IF NOT EXISTS healthmonitor_view_parent_idx ON healthmonitor_view (parent_id);
CREATE INDEX IF NOT EXISTS healthmonitor_view_project_idx
    ON healthmonitor_view (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS l7policy_view (
    id text PRIMARY KEY,
    lb_id text NOT NULL,
    parent_id text NOT NULL,
    project_id text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS l7policy_view_lb_idx ON l7policy_view (lb_id);
CREATE INDEX IF NOT EXISTS l7policy_view_parent_idx ON l7policy_view (parent_id);
CREATE INDEX IF NOT EXISTS l7policy_view_project_idx
    ON l7policy_view (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS l7rule_view (
    id text PRIMARY KEY,
    lb_id text NOT NULL,
    parent_id text NOT NULL,
    project_id text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS l7rule_view_lb_idx ON l7rule_view (lb_id);
CREATE INDEX IF NOT EXISTS l7rule_view_parent_idx ON l7rule_view (parent_id);
CREATE INDEX IF NOT EXISTS l7rule_view_project_idx ON l7rule_view (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS vip_allocations (
    subnet_id text NOT NULL,
    address text NOT NULL,
    lb_id text NOT NULL,
    PRIMARY KEY (subnet_id, address)
);
CREATE TABLE IF NOT EXISTS amphora_view (
    id text PRIMARY KEY,
    lb_id text,
    status text NOT NULL,
    agent_url text NOT NULL,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS amphora_view_lb_idx ON amphora_view (lb_id);

-- The catalog (services/api/adapters/catalog.py): flavors, availability zones, their profiles.
CREATE TABLE IF NOT EXISTS flavor_view (
    id text PRIMARY KEY,
    profile_id text,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS flavor_view_profile_idx ON flavor_view (profile_id);
CREATE UNIQUE INDEX IF NOT EXISTS flavor_view_name_idx ON flavor_view ((body->>'name'));
CREATE TABLE IF NOT EXISTS flavorprofile_view (
    id text PRIMARY KEY,
    profile_id text,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS flavorprofile_view_profile_idx ON flavorprofile_view (profile_id);
CREATE TABLE IF NOT EXISTS availabilityzone_view (
    id text PRIMARY KEY,
    profile_id text,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS availabilityzone_view_profile_idx
    ON availabilityzone_view (profile_id);
CREATE TABLE IF NOT EXISTS availabilityzoneprofile_view (
    id text PRIMARY KEY,
    profile_id text,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS availabilityzoneprofile_view_profile_idx
    ON availabilityzoneprofile_view (profile_id);

-- The API's reads (services/api/adapters/views.py, quotas.py): quotas per project, and
-- amphorae with their load balancer's project.
CREATE TABLE IF NOT EXISTS quota_view (
    project_id text PRIMARY KEY,
    version int NOT NULL DEFAULT 0,
    body jsonb NOT NULL
);
CREATE OR REPLACE VIEW amphora_list AS
    SELECT a.id, a.lb_id, coalesce(lb.project_id, '') AS project_id, a.status, a.created_at,
           a.body
    FROM amphora_view a LEFT JOIN loadbalancer_view lb ON lb.id = a.lb_id
    WHERE a.status <> 'DELETED';

-- The key manager (libs/common/secretstore.py): sealed secrets and certificate containers.
CREATE TABLE IF NOT EXISTS secrets (
    id uuid PRIMARY KEY,
    project_id text NOT NULL,
    creator_id text,
    name text,
    secret_type text NOT NULL,
    algorithm text,
    bit_length int,
    mode text,
    content_type text NOT NULL,
    expiration timestamptz,
    key_id text NOT NULL,
    sealed bytea NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS secrets_project_idx ON secrets (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS secret_containers (
    id uuid PRIMARY KEY,
    project_id text NOT NULL,
    creator_id text,
    name text,
    type text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS secret_containers_project_idx
    ON secret_containers (project_id, created_at, id);
CREATE TABLE IF NOT EXISTS secret_container_refs (
    container_id uuid NOT NULL REFERENCES secret_containers (id) ON DELETE CASCADE,
    name text NOT NULL,
    secret_id uuid NOT NULL REFERENCES secrets (id),
    PRIMARY KEY (container_id, name)
);
CREATE INDEX IF NOT EXISTS secret_container_refs_secret_idx ON secret_container_refs (secret_id);

-- Heartbeats (services/health/adapters/postgres.py): last seen per amphora, and traffic
-- counters per (listener, amphora) that the API sums.
CREATE TABLE IF NOT EXISTS amphora_health (
    amphora_id text PRIMARY KEY,
    last_seen timestamptz,
    seq bigint NOT NULL DEFAULT 0,
    failover_stopped boolean NOT NULL DEFAULT false,
    stopped_at timestamptz
);
CREATE TABLE IF NOT EXISTS listener_stats (
    listener_id text NOT NULL,
    amphora_id text NOT NULL,
    lb_id text NOT NULL,
    bytes_in bigint NOT NULL DEFAULT 0,
    bytes_out bigint NOT NULL DEFAULT 0,
    active_connections bigint NOT NULL DEFAULT 0,
    total_connections bigint NOT NULL DEFAULT 0,
    request_errors bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (listener_id, amphora_id)
);
CREATE INDEX IF NOT EXISTS listener_stats_lb_idx ON listener_stats (lb_id);
CREATE INDEX IF NOT EXISTS listener_stats_amphora_idx ON listener_stats (amphora_id);

-- Housekeeping (services/housekeeping/adapters/postgres.py): when each job last ran.
CREATE TABLE IF NOT EXISTS housekeeping_runs (
    job text PRIMARY KEY,
    last_run timestamptz NOT NULL
);

-- Release 0.1.0 recorded which sets of these statements it had run here.
DROP TABLE IF EXISTS schema_applied;
"""
