-- Integrations: enterprise systems that talk to RIS over AMQP with their own broker
-- user `ris.<tenant>.int.<name>` (created through the management API; the password
-- lives only in RabbitMQ). The row is what `GET /v1/integrations` lists.

CREATE TABLE integrations (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON integrations TO ris_app;

ALTER TABLE integrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON integrations USING (tenant_id = ris_current_tenant());

-- AMQP request/reply: where the task's final outcome goes (a queue of the submitting
-- integration, published through the default exchange) and the correlation id to echo.
-- Set by the dispatcher from the submission's properties; NULL for tasks nobody awaits.
ALTER TABLE tasks ADD COLUMN reply_to text;
ALTER TABLE tasks ADD COLUMN correlation_id text;
