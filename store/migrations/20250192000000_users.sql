-- People: users who log in with a password (argon2id) and, for admin roles, a TOTP
-- code; their login sessions (one refresh token each, rotated on use); and the keys
-- that sign access tokens (HS256 JWTs, by kid).
--
-- All three are looked up by credential, across tenants, by the connecting user (like
-- `api_keys`); `users` also carries row-level security for tenant-scoped reads.

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    -- NULL for platform admins, who act in no tenant.
    tenant_id      uuid REFERENCES tenants (id) ON DELETE CASCADE,
    email          text NOT NULL UNIQUE,
    role           text NOT NULL
                   CHECK (role IN ('platform-admin', 'tenant-admin', 'operator', 'viewer')),
    password_hash  text NOT NULL,
    totp_secret    bytea,
    totp_enabled   boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'platform-admin') = (tenant_id IS NULL))
);
CREATE INDEX users_tenant ON users (tenant_id);

GRANT SELECT ON users TO ris_app;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users USING (tenant_id = ris_current_tenant());

CREATE TABLE sessions (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_hash  bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE jwt_keys (
    kid          text PRIMARY KEY,
    secret       bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activate_at  timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz
);
