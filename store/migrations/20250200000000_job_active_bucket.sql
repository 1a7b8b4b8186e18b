-- Fanout: a child's moves between the live states of a dispatched child (queued,
-- routing, executing, retrying) no longer take its job's row lock.
--
-- Until now every state change of every child locked the job row to move the job's
-- counts, so a job's children changed state one at a time (a job over 1,000 agents made
-- 3,000 transactions queue on one row). The decisions that need the lock — halting,
-- settling, ending — follow only a child's *final* change, and none of them depends on
-- which live state a dispatched child is in. So the job row now counts those four states
-- as one bucket, `active`, changed only when a child is created (by the dispatching
-- transaction, which holds the row lock) and when it ends (under the row lock, as
-- before); a move inside the bucket updates only the child's target row. Readers get
-- the counts by state from `ris_job_counts`, which splits `active` by the targets'
-- states (at most `max_concurrency` rows, read through `job_targets_state`).

-- The live states of a dispatched child are one bucket on the job row.
CREATE FUNCTION ris_job_bucket(state text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
        SELECT CASE WHEN state IN ('queued', 'routing', 'executing', 'retrying')
                    THEN 'active' ELSE state END
    $$;

UPDATE jobs SET counts =
    (counts - ARRAY['queued', 'routing', 'executing', 'retrying'])
    || jsonb_build_object('active',
                          ris_job_sum(counts, ARRAY['queued', 'routing', 'executing', 'retrying']));

-- The job's counts by target state: `active` split by its children's states.
CREATE FUNCTION ris_job_counts(job uuid, counts jsonb) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
        SELECT (counts - 'active') || jsonb_build_object(
                   'queued', count(*) FILTER (WHERE state = 'queued'),
                   'routing', count(*) FILTER (WHERE state = 'routing'),
                   'executing', count(*) FILTER (WHERE state = 'executing'),
                   'retrying', count(*) FILTER (WHERE state = 'retrying'))
        FROM job_targets
        WHERE job_id = job AND state IN ('queued', 'routing', 'executing', 'retrying')
    $$;

-- As before (20250165000000_jobs.sql), with `active` among the live counts.
CREATE OR REPLACE FUNCTION ris_job_settle(job uuid) RETURNS void
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
       AND ris_job_sum(j.counts, ARRAY['pending', 'waiting', 'active']) = 0 THEN
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

-- A child task was created or changed state. A move between live states changes only
-- its target (and, when the child is created, moves it from `pending` to `active` on
-- the job row, whose lock the dispatching transaction holds). A final change locks the
-- job row first, then moves the target and the job's counts, counts errors and settled
-- children, and settles the job — as before.
CREATE OR REPLACE FUNCTION ris_job_child_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    job_state text;
    t job_targets%ROWTYPE;
    target_state text;
BEGIN
    IF ris_job_bucket(NEW.state) = 'active' THEN
        SELECT * INTO t FROM job_targets WHERE task_id = NEW.id FOR UPDATE;
        IF NOT FOUND OR t.state = NEW.state THEN
            RETURN NULL;
        END IF;
        UPDATE job_targets SET state = NEW.state, updated_at = now()
            WHERE job_id = t.job_id AND seq = t.seq;
        IF ris_job_bucket(t.state) <> 'active' THEN
            UPDATE jobs SET counts = ris_job_move(counts, t.state, 'active', 1),
                            updated_at = now()
                WHERE id = NEW.job_id;
        END IF;
        RETURN NULL;
    END IF;
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
    UPDATE job_targets SET state = target_state, updated_at = now(), unsettled = false
        WHERE job_id = t.job_id AND seq = t.seq;
    UPDATE jobs SET
        counts = ris_job_move(counts, ris_job_bucket(t.state), target_state, 1),
        errors = errors + CASE WHEN target_state IN ('failed', 'timed_out') THEN 1 ELSE 0 END,
        unsettled = unsettled - CASE WHEN t.unsettled THEN 1 ELSE 0 END,
        updated_at = now()
        WHERE id = NEW.job_id;
    PERFORM ris_job_settle(NEW.job_id);
    RETURN NULL;
END
$$;
