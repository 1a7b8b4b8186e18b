-- Fleet jobs: one task template run once on every agent of a fixed target set.
--
-- A job's targets are resolved when it is created and stored in `job_targets`, one row
-- per agent, in dispatch order. A target's child task is created only when the target
-- is dispatched (so a job over 10,000 agents costs 10,000 small rows, not 10,000
-- tasks), and links back through `tasks.job_id`.
--
-- Counts by target state live on the job row (`counts`), kept by the trigger below in
-- the same transaction as every child's state change: reading a job's status never
-- scans its children. The same trigger takes the decisions that must be atomic with a
-- child's change: halting when the errors pass `max_errors`, finishing the halt, and
-- ending the job. Every child change of a job locks the job row first, so these
-- decisions serialize with dispatching (which locks the job row too).

CREATE TABLE jobs (
    id                      uuid PRIMARY KEY,
    tenant_id               uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    state                   text NOT NULL CHECK (state IN ('running', 'halting', 'halted',
                                                           'cancelled', 'completed')),
    -- The JobRequest, exactly as accepted.
    request                 jsonb NOT NULL,
    -- Resolved against the target count when the job was created.
    max_concurrency         integer NOT NULL CHECK (max_concurrency >= 1),
    max_errors              integer NOT NULL CHECK (max_errors >= 0),
    cancel_running_on_halt  boolean NOT NULL DEFAULT false,
    target_count            integer NOT NULL CHECK (target_count >= 0),
    -- Target state -> number of targets in it; the values add up to target_count.
    counts                  jsonb NOT NULL,
    -- Children that ended failed or timed_out.
    errors                  integer NOT NULL DEFAULT 0,
    -- Children that were not started yet when the job began halting and have not ended:
    -- the halt is complete when this reaches 0.
    unsettled               integer NOT NULL DEFAULT 0,
    reason                  text,
    halting_at              timestamptz,
    halted_at               timestamptz,
    cancelled_at            timestamptz,
    -- When the first child was dispatched.
    started_at              timestamptz,
    wait_until              timestamptz,
    ended_at                timestamptz,
    -- The last `state`/end announced on ris.events (so each is announced once).
    announced               text,
    -- The dispatchers' job sweep: not offered again before this time.
    next_sweep_at           timestamptz NOT NULL DEFAULT now(),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC, id DESC);
-- The sweep looks only at jobs with something left to do (or to announce).
CREATE INDEX jobs_open ON jobs (next_sweep_at)
    WHERE ended_at IS NULL OR announced IS DISTINCT FROM state || ':ended';

CREATE TABLE job_targets (
    tenant_id   uuid NOT NULL,
    job_id      uuid NOT NULL,
    -- Dispatch order, from 0.
    seq         integer NOT NULL,
    agent_id    uuid NOT NULL,
    agent_name  text NOT NULL,
    state       text NOT NULL,
    task_id     uuid,
    -- The child had not started when the job began halting (see jobs.unsettled).
    unsettled   boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq),
    UNIQUE (job_id, agent_id)
    -- No foreign key to jobs: checking it costs a lookup per row, most of the time of
    -- inserting 10,000 targets. Targets are written only in their job's own transaction
    -- (or by the trigger below, under the job's row lock), and are deleted with their job
    -- by `jobs_delete_targets`.
);
CREATE INDEX job_targets_state ON job_targets (job_id, state, seq);
CREATE UNIQUE INDEX job_targets_task ON job_targets (task_id) WHERE task_id IS NOT NULL;

-- What ON DELETE CASCADE would do (a job goes when its tenant is deleted).
CREATE FUNCTION ris_job_delete_targets() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    DELETE FROM job_targets WHERE job_id = OLD.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_delete_targets AFTER DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION ris_job_delete_targets();

ALTER TABLE tasks ADD COLUMN job_id uuid;
ALTER TABLE tasks ADD FOREIGN KEY (tenant_id, job_id) REFERENCES jobs (tenant_id, id)
    ON DELETE CASCADE;
CREATE INDEX tasks_job ON tasks (job_id, state) WHERE job_id IS NOT NULL;

-- `counts` with `n` targets moved from state `a` to state `b`.
CREATE FUNCTION ris_job_move(counts jsonb, a text, b text, n integer) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    AS $$
        SELECT CASE WHEN n = 0 OR a = b THEN counts ELSE
            jsonb_set(
                jsonb_set(counts, ARRAY[a], to_jsonb(COALESCE((counts->>a)::integer, 0) - n)),
                ARRAY[b], to_jsonb(COALESCE((counts->>b)::integer, 0) + n))
        END
    $$;

-- Targets in `counts` whose state is one of `states`.
CREATE FUNCTION ris_job_sum(counts jsonb, states text[]) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT COALESCE(sum((counts->>s)::integer), 0)::integer FROM unnest(states) s $$;

-- The decisions that follow a change of the job's counts, taken under the job row lock
-- (the caller holds it):
-- 1. running, and more errors than max_errors: `halting`. Targets not dispatched yet
--    are `skipped_halted`; children not started yet are marked unsettled (the
--    dispatchers stop them). `halting_at` is read after the lock is held, so every
--    dispatch that committed before it is earlier, and none can follow it.
-- 2. halting, and no unsettled child left: `halted` (`halted_at`).
-- 3. no target left that is not final: ended (`ended_at`); running → completed.
CREATE FUNCTION ris_job_settle(job uuid) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    j jobs%ROWTYPE;
    n integer;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = job FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF j.state = 'running' AND j.errors > j.max_errors THEN
        UPDATE job_targets SET state = 'skipped_halted', updated_at = now()
            WHERE job_id = j.id AND state IN ('pending', 'waiting');
        j.counts := ris_job_move(j.counts, 'pending', 'skipped_halted',
                                 COALESCE((j.counts->>'pending')::integer, 0));
        j.counts := ris_job_move(j.counts, 'waiting', 'skipped_halted',
                                 COALESCE((j.counts->>'waiting')::integer, 0));
        UPDATE job_targets SET unsettled = true
            WHERE job_id = j.id AND state IN ('queued', 'routing', 'retrying');
        GET DIAGNOSTICS n = ROW_COUNT;
        j.state := 'halting';
        j.unsettled := n;
        j.halting_at := clock_timestamp();
        j.reason := format('%s of %s targets failed, more than max_errors (%s)',
                           j.errors, j.target_count, j.max_errors);
    END IF;
    IF j.state = 'halting' AND j.unsettled = 0 THEN
        j.state := 'halted';
        j.halted_at := clock_timestamp();
    END IF;
    IF j.ended_at IS NULL
       AND ris_job_sum(j.counts, ARRAY['pending', 'waiting', 'queued', 'routing',
                                       'executing', 'retrying']) = 0 THEN
        j.ended_at := clock_timestamp();
        IF j.state = 'running' THEN
            j.state := 'completed';
        END IF;
    END IF;
    UPDATE jobs SET state = j.state, counts = j.counts, unsettled = j.unsettled,
                    halting_at = j.halting_at, halted_at = j.halted_at, reason = j.reason,
                    ended_at = j.ended_at, updated_at = now()
        WHERE id = j.id;
END
$$;

-- A child task was created or changed state: move its target and the job's counts, count
-- errors and settled children, then settle the job. Runs in the transaction of the
-- change, after locking the job row.
CREATE FUNCTION ris_job_child_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    job_state text;
    t job_targets%ROWTYPE;
    target_state text;
    final boolean;
BEGIN
    SELECT state INTO job_state FROM jobs WHERE id = NEW.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO t FROM job_targets WHERE task_id = NEW.id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    target_state := NEW.state;
    -- Cancelled before it ever ran, because the job stopped: skipped.
    IF NEW.state = 'cancelled' AND TG_OP = 'UPDATE'
       AND OLD.state IN ('queued', 'routing', 'retrying') AND job_state <> 'running' THEN
        target_state := CASE WHEN job_state = 'cancelled' THEN 'skipped_cancelled'
                             ELSE 'skipped_halted' END;
    END IF;
    IF target_state = t.state THEN
        RETURN NULL;
    END IF;
    final := target_state NOT IN ('queued', 'routing', 'executing', 'retrying');
    UPDATE job_targets SET state = target_state, updated_at = now(),
                           unsettled = unsettled AND NOT final
        WHERE job_id = t.job_id AND seq = t.seq;
    UPDATE jobs SET
        counts = ris_job_move(counts, t.state, target_state, 1),
        errors = errors + CASE WHEN target_state IN ('failed', 'timed_out') THEN 1 ELSE 0 END,
        unsettled = unsettled - CASE WHEN t.unsettled AND final THEN 1 ELSE 0 END,
        updated_at = now()
        WHERE id = NEW.job_id;
    -- Only a target that became final can add an error, settle a child or end the job.
    IF final THEN
        PERFORM ris_job_settle(NEW.job_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_job_child_inserted AFTER INSERT ON tasks
    FOR EACH ROW WHEN (NEW.job_id IS NOT NULL)
    EXECUTE FUNCTION ris_job_child_changed();
CREATE TRIGGER tasks_job_child_changed AFTER UPDATE OF state ON tasks
    FOR EACH ROW WHEN (NEW.job_id IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION ris_job_child_changed();

GRANT SELECT, INSERT, UPDATE, DELETE ON jobs, job_targets TO ris_app;

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobs USING (tenant_id = ris_current_tenant());

ALTER TABLE job_targets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_targets USING (tenant_id = ris_current_tenant());
