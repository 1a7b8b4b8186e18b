-- Docker services (see docs/services.md).
--
-- `services` holds the current declaration of each service: its revision, target and
-- spec. Every change (create, update, scale, restart, delete) bumps `revision` and
-- appends a `service_revisions` row, in the transaction that changes the service.
-- A deleted service keeps its row (with `deleted_at`) as a tombstone: revisions keep
-- counting if the name is declared again, so an agent that remembers the removal
-- (it keeps the highest revision it was told) obeys the new declaration.
--
-- `service_instances` is one row per (service, agent) that RIS has told to run, or to
-- remove, the service: what it wants there (`desired_revision`, `removing`) against
-- what the agent last reported. A row goes when its agent reports `removed` after
-- being told to remove, or with its agent.

ALTER TABLE agents ADD COLUMN capabilities text[];
COMMENT ON COLUMN agents.capabilities IS
    'What the agent last advertised in its heartbeat (shell, http, docker, ...); NULL before its first heartbeat';

CREATE TABLE services (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    revision    integer NOT NULL CHECK (revision >= 1),
    -- ServiceTarget and ServiceSpec, serialized.
    target      jsonb NOT NULL,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Set by DELETE; the service is gone once no instance remains.
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE service_revisions (
    tenant_id   uuid NOT NULL,
    service     text NOT NULL,
    revision    integer NOT NULL,
    -- create, update, scale, restart, delete.
    change      text NOT NULL,
    target      jsonb NOT NULL,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, service, revision),
    FOREIGN KEY (tenant_id, service) REFERENCES services (tenant_id, name) ON DELETE CASCADE
);

CREATE TABLE service_instances (
    tenant_id                  uuid NOT NULL,
    service                    text NOT NULL,
    agent_id                   uuid NOT NULL,
    -- The revision last sent to the agent (in a service.apply, or with service.remove).
    desired_revision           integer NOT NULL,
    -- The agent was told to remove the service (deleted, or the agent no longer matches).
    removing                   boolean NOT NULL DEFAULT false,
    -- From the agent's latest report (NULL before the first one).
    reported_desired_revision  integer,
    revision                   integer,
    state                      text NOT NULL DEFAULT 'pending'
                               CHECK (state IN ('pending', 'converging', 'running', 'rolled_back',
                                                'failed', 'removed')),
    reason                     text,
    error                      text,
    containers                 jsonb NOT NULL DEFAULT '[]',
    restarts                   integer NOT NULL DEFAULT 0,
    -- When the agent sent its latest report (older reports arriving late are ignored),
    -- and when it was stored.
    report_sent_at             timestamptz,
    reported_at                timestamptz,
    -- When the latest order (apply or remove) was published: at most one every 15 s
    -- while the agent lags.
    last_applied_at            timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, service, agent_id),
    FOREIGN KEY (tenant_id, service) REFERENCES services (tenant_id, name) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX service_instances_agent ON service_instances (tenant_id, agent_id);
CREATE INDEX service_instances_state ON service_instances (state);

GRANT SELECT, INSERT, UPDATE, DELETE ON services, service_revisions, service_instances TO ris_app;

ALTER TABLE services ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON services USING (tenant_id = ris_current_tenant());
ALTER TABLE service_revisions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON service_revisions USING (tenant_id = ris_current_tenant());
ALTER TABLE service_instances ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON service_instances USING (tenant_id = ris_current_tenant());
