-- The schema of release 0.1.0 as its services left it: every CREATE of the per-module DDL
-- (libs/common/{eventstore,bus,readmodel,secretstore}.py, services/api/adapters/{views,catalog}.py,
-- services/health/adapters/postgres.py, services/housekeeping/adapters/postgres.py) in the order
-- the services ran it, plus the schema_applied fingerprints of database.migrate.
-- Generated once from that code; frozen: never edit it.

-- libs/common/database.py
CREATE TABLE IF NOT EXISTS schema_applied (
    fingerprint text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- common to every service
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
DROP TRIGGER IF EXISTS events_insert_only ON events;
CREATE TRIGGER events_insert_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_insert_only();
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    subject text NOT NULL,
    body jsonb NOT NULL,
    traceparent text
);
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
CREATE INDEX IF NOT EXISTS loadbalancer_view_project_idx ON loadbalancer_view (project_id, created_at, id);


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
CREATE INDEX IF NOT EXISTS listener_view_project_idx ON listener_view (project_id, created_at, id);


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
CREATE INDEX IF NOT EXISTS healthmonitor_view_project_idx ON healthmonitor_view (project_id, created_at, id);


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
CREATE INDEX IF NOT EXISTS l7policy_view_project_idx ON l7policy_view (project_id, created_at, id);


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

-- the api service's own tables
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

CREATE TABLE IF NOT EXISTS flavor_view (
    id text PRIMARY KEY,
    profile_id text,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS flavor_view_profile_idx ON flavor_view (profile_id);


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
CREATE INDEX IF NOT EXISTS availabilityzone_view_profile_idx ON availabilityzone_view (profile_id);


CREATE TABLE IF NOT EXISTS availabilityzoneprofile_view (
    id text PRIMARY KEY,
    profile_id text,
    version int NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS availabilityzoneprofile_view_profile_idx ON availabilityzoneprofile_view (profile_id);
CREATE UNIQUE INDEX IF NOT EXISTS flavor_view_name_idx ON flavor_view ((body->>'name'));
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

INSERT INTO schema_applied (fingerprint) VALUES ('b43a2ffaa0661054acb0071ea3e50826059853a9f5b9792bb4309cfd87150f21') ON CONFLICT DO NOTHING;

-- the provisioner service's own tables
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

INSERT INTO schema_applied (fingerprint) VALUES ('f99601cb772d149600ae50a78d12201a22ac0bd776ea449f25b62f8546f3fc21') ON CONFLICT DO NOTHING;

-- the health service's own tables
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

INSERT INTO schema_applied (fingerprint) VALUES ('69c6873019e36d0818c842d26a2328286b0584d05407c0c7f2f6b81e6bfd1110') ON CONFLICT DO NOTHING;

-- the housekeeping service's own tables
CREATE TABLE IF NOT EXISTS housekeeping_runs (
    job text PRIMARY KEY,
    last_run timestamptz NOT NULL
);

INSERT INTO schema_applied (fingerprint) VALUES ('525a3d434fe46d1b071f89d05fd304e7d2af54b600aff309a3e82184bd88a89a') ON CONFLICT DO NOTHING;
