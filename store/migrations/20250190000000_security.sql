-- Security: API key roles, tenant limits, and the hash-chained audit log.

-- API keys act inside their tenant; `platform-admin` and `agent` are never key roles.
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_role CHECK (role IN ('tenant-admin', 'operator', 'viewer'));

-- Rate limits and quotas (`TenantLimits` as JSON); absent keys take the defaults.
ALTER TABLE tenants ADD COLUMN limits jsonb NOT NULL DEFAULT '{}';

-- The audit log: one hash chain per tenant (tenant_id NULL: the platform's chain).
-- `hash` = SHA-256 of the canonical entry, which includes `prev_hash` (the hash of the
-- chain's previous entry, 32 zero bytes for the first). Writers take a per-chain
-- advisory lock, so concurrent writers cannot fork a chain. No foreign key to
-- `tenants`: the trail outlives a deleted tenant.
CREATE TABLE audit_log (
    tenant_id    uuid,
    seq          bigint NOT NULL CHECK (seq >= 1),
    tenant_name  text,
    actor        text NOT NULL,
    action       text NOT NULL,
    target       text NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('success', 'denied', 'failed')),
    status       integer NOT NULL,
    request_id   text,
    source       text,
    at           timestamptz NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL
);
CREATE UNIQUE INDEX audit_log_chain
    ON audit_log ((coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)), seq);

-- Append-only, twice over: the application role may only read and insert, and a
-- trigger refuses UPDATE, DELETE and TRUNCATE from anyone (a superuser can still get
-- around it, which is what `GET /v1/audit/verify` is for).
GRANT SELECT, INSERT ON audit_log TO ris_app;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM ris_app;

CREATE FUNCTION audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log USING (tenant_id = ris_current_tenant());
