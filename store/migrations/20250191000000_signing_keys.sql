-- Ed25519 keys that sign task assignments and control messages (`docs/security.md`).
--
-- A key is published (agents learn its public half at enrollment and in heartbeat
-- replies) before it signs: the signing key is the newest one whose `activate_at` has
-- passed. A rotated-out key still verifies until it is retired. Platform-level: no
-- tenant, no grants to `ris_app`.
CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    public_key   bytea NOT NULL,
    secret_seed  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activate_at  timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz
);
