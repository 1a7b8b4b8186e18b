-- Outbound webhooks: a tenant's subscriptions of URLs to its events, and one delivery
-- row per (webhook, event) that the dispatcher's delivery loop works through, retrying
-- with backoff. The retry schedule lives here (next_attempt_at), like task retries, so
-- it survives any restart.

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url         text NOT NULL,
    -- Topic patterns (`task.*`, `#`), validated by the API.
    events      text[] NOT NULL,
    -- Signs deliveries (HMAC-SHA256). Stored as given: it must be usable to sign.
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, created_at);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    -- The event exactly as published on ris.events: the bytes that are signed and sent.
    body             bytea NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed', 'dead')),
    -- Attempts made in total, and how many of them came before the latest redelivery
    -- request (the retry budget counts from there).
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    budget_from      integer NOT NULL DEFAULT 0 CHECK (budget_from >= 0),
    response_status  integer,
    error            text,
    -- Due time while pending or failed; a claim moves it forward (a lease).
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Every attempt: [{attempt, response_status, error, at}], oldest first.
    attempt_log      jsonb NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- An event redelivered from ris.webhooks after a lost ack is delivered once.
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at DESC, id DESC);

GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks, webhook_deliveries TO ris_app;

ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks USING (tenant_id = ris_current_tenant());
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries USING (tenant_id = ris_current_tenant());
