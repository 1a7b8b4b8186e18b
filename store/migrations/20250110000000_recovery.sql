-- Recovery: retries that wait in `retrying`, agent liveness as the reaper saw it, and
-- tenant-wide retry defaults.

-- Whether the agent was online when the reaper (or a heartbeat) last looked, and since
-- when. The reaper flips it to false when the presence key has expired.
ALTER TABLE agents ADD COLUMN online boolean NOT NULL DEFAULT false;
ALTER TABLE agents ADD COLUMN status_changed_at timestamptz;
CREATE INDEX agents_online ON agents (id) WHERE online;

-- A retry waits in `retrying` until next_placement_at: the sweep places both states.
CREATE INDEX tasks_placeable ON tasks (next_placement_at) WHERE state IN ('queued', 'retrying');
-- Tasks an agent holds, for agent loss.
CREATE INDEX tasks_active_per_agent ON tasks (agent_id) WHERE state IN ('routing', 'executing');
-- Assignments that never started, for the stale-routing sweep.
CREATE INDEX tasks_routing_since ON tasks (updated_at) WHERE state = 'routing';

-- The retry policy of tasks that do not carry their own.
ALTER TABLE tenants ADD COLUMN default_retry jsonb;
