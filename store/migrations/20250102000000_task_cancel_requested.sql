-- Cancellation through the API.
--
-- A task that is `executing` cannot be cancelled on the spot: the agent must stop its
-- process first and report `cancelled` through the normal result path. Until then the
-- task stays `executing`, and this column records that a cancel was requested (and
-- when). It is not an event: `task_events` has one row per state change, and a request
-- changes no state. Cancellations that take effect at once set it too, so it always
-- means "a cancel was requested through the API at this time". The first request wins.
ALTER TABLE tasks ADD COLUMN cancel_requested_at timestamptz;
