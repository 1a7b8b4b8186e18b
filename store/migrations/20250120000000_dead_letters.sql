-- Dead letters: every message that reached a tenant's `ris.dead` queue, kept for
-- listing, replay and discarding through the API (the dispatcher moves them here from
-- the queue).

CREATE TABLE dead_letters (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The queue the message was taken from, and why it was parked.
    source_queue  text NOT NULL,
    reason        text NOT NULL,
    -- Where a replay publishes it ('' when unknown: not replayable).
    exchange      text NOT NULL,
    routing_key   text NOT NULL,
    -- AMQP headers as JSON, and the other basic properties (MessageProperties).
    headers       jsonb NOT NULL DEFAULT '{}',
    properties    jsonb NOT NULL DEFAULT '{}',
    body          bytea NOT NULL,
    dead_at       timestamptz NOT NULL,
    replayed_at   timestamptz,
    replay_count  integer NOT NULL DEFAULT 0 CHECK (replay_count >= 0),
    -- sha256 of everything above that comes from the message (not dead_at, which may be
    -- the time it was read). A message redelivered from `ris.dead` after its ack was
    -- lost is the same message: the unique key stores it once.
    fingerprint   bytea NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, fingerprint)
);
CREATE INDEX dead_letters_tenant_dead_at ON dead_letters (tenant_id, dead_at DESC, id DESC);

GRANT SELECT, INSERT, UPDATE, DELETE ON dead_letters TO ris_app;

ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON dead_letters USING (tenant_id = ris_current_tenant());
