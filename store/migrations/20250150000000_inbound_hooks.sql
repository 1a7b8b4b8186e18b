-- Inbound webhooks: an outside system triggers a task by POSTing a signed JSON body to
-- `/v1/hooks/{id}`. The secret is kept in clear because verifying an HMAC needs it
-- (like `webhooks.secret`); no API response shows it. `template` is a task request
-- whose string values may hold `{{field}}` placeholders, validated by the API.

CREATE TABLE inbound_hooks (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    secret      text NOT NULL,
    template    jsonb NOT NULL,
    fields      jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON inbound_hooks TO ris_app;

ALTER TABLE inbound_hooks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inbound_hooks USING (tenant_id = ris_current_tenant());
