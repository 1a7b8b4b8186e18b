-- RIS system of record, first version.
--
-- Every row but `tenants` carries `tenant_id`. Child tables of `agents` and `tasks`
-- reference their parent by (tenant_id, id), so a child can never claim a tenant other
-- than its parent's. Row-level security (end of file) backs up the `tenant_id` filter
-- every tenant-scoped query already has.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL,
    role          text NOT NULL DEFAULT 'tenant-admin',
    secret_hash   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE enrollment_tokens (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    -- The agent this token enrolled (no foreign key: the agent may be removed later).
    agent_id    uuid
);
CREATE INDEX enrollment_tokens_tenant ON enrollment_tokens (tenant_id);

CREATE TABLE agents (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                  text NOT NULL,
    labels                jsonb NOT NULL DEFAULT '{}',
    capacity              integer NOT NULL CHECK (capacity >= 0),
    version               text NOT NULL,
    hostname              text NOT NULL,
    addresses             jsonb NOT NULL DEFAULT '[]',
    heartbeat_token_hash  bytea NOT NULL,
    enrolled_at           timestamptz NOT NULL DEFAULT now(),
    last_seen_at          timestamptz,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);

CREATE TABLE agent_address_history (
    id          bigserial PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    agent_id    uuid NOT NULL,
    -- The address set that was replaced, and when.
    addresses   jsonb NOT NULL,
    changed_at  timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_address_history_agent
    ON agent_address_history (tenant_id, agent_id, changed_at DESC, id DESC);

CREATE TABLE tasks (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    state              text NOT NULL CHECK (state IN ('queued', 'routing', 'executing', 'retrying',
                                                      'completed', 'failed', 'timed_out', 'cancelled')),
    kind               text NOT NULL,
    -- The serialized TaskRequest, exactly as accepted.
    request            jsonb NOT NULL,
    attempts           integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Agent of the latest attempt (no foreign key: history outlives agents).
    agent_id           uuid,
    reason             text,
    -- TaskResult of the latest finished attempt.
    result             jsonb,
    idempotency_key    text,
    -- A queued task still unplaced at this time fails with `no_agent`.
    queue_deadline     timestamptz NOT NULL,
    -- A queued task is not offered to a dispatcher before this time (placement lease
    -- and retry delay).
    next_placement_at  timestamptz NOT NULL DEFAULT now(),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    metadata           jsonb NOT NULL DEFAULT '{}',
    UNIQUE (tenant_id, idempotency_key),
    UNIQUE (tenant_id, id)
);
CREATE INDEX tasks_tenant_created ON tasks (tenant_id, created_at DESC, id DESC);
CREATE INDEX tasks_unplaced ON tasks (next_placement_at) WHERE state = 'queued';
CREATE INDEX tasks_queued_per_tenant ON tasks (tenant_id) WHERE state = 'queued';

-- Append-only history of every state change.
CREATE TABLE task_events (
    seq        bigserial PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    task_id    uuid NOT NULL,
    state      text NOT NULL,
    attempt    integer NOT NULL,
    agent_id   uuid,
    reason     text,
    detail     jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX task_events_task ON task_events (task_id, seq);

-- Every result an agent reported, one per attempt: the primary key deduplicates
-- redelivered result messages.
CREATE TABLE task_results (
    tenant_id    uuid NOT NULL,
    task_id      uuid NOT NULL,
    attempt      integer NOT NULL,
    agent_id     uuid NOT NULL,
    outcome      text NOT NULL,
    result       jsonb NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, attempt),
    FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, id) ON DELETE CASCADE
);

-- Row-level security.
--
-- Tenant-scoped queries run in a transaction that switches to the NOLOGIN role
-- `ris_app` and sets `ris.tenant_id` (both transaction-local). Policies then hide every
-- row of another tenant, so a query that forgets its tenant filter returns nothing
-- rather than someone else's rows. The connecting user owns the tables and bypasses
-- RLS, which is what cross-tenant work (dispatcher sweeps, credential lookups) needs.
--
-- Creating the role needs superuser or CREATEROLE; a DBA may also create `ris_app` and
-- grant it to the application user beforehand, and this block then does nothing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ris_app') THEN
        BEGIN
            CREATE ROLE ris_app NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            -- Roles are cluster-wide: another database's migration created it meanwhile.
            NULL;
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'ris_app', 'MEMBER') THEN
        GRANT ris_app TO CURRENT_USER;
    END IF;
END
$$;

-- The tenant of the current transaction, or NULL when none is set (an unset or reset
-- placeholder reads as '' or NULL; both mean "no tenant", which matches no row).
CREATE FUNCTION ris_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('ris.tenant_id', true), '')::uuid $$;

GRANT SELECT ON tenants TO ris_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON api_keys, enrollment_tokens, agents, agent_address_history, tasks, task_events, task_results
    TO ris_app;
GRANT USAGE ON SEQUENCE agent_address_history_id_seq, task_events_seq_seq TO ris_app;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants USING (id = ris_current_tenant());

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys USING (tenant_id = ris_current_tenant());

ALTER TABLE enrollment_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON enrollment_tokens USING (tenant_id = ris_current_tenant());

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents USING (tenant_id = ris_current_tenant());

ALTER TABLE agent_address_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_address_history USING (tenant_id = ris_current_tenant());

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tasks USING (tenant_id = ris_current_tenant());

ALTER TABLE task_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON task_events USING (tenant_id = ris_current_tenant());

ALTER TABLE task_results ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON task_results USING (tenant_id = ris_current_tenant());
