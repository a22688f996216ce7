-- Scale-out: the worker processes that announce themselves, and per-job figures for /metrics.

CREATE TABLE workers (
  id             TEXT   NOT NULL PRIMARY KEY,  -- <INSTANCE_ID>/<thread>
  host           TEXT   NOT NULL,
  model          TEXT   NOT NULL,
  device         TEXT   NOT NULL,
  started_at     BIGINT NOT NULL,
  last_heartbeat BIGINT NOT NULL
);

-- Which model completed a job, and how long its last attempt ran.
ALTER TABLE jobs ADD COLUMN model TEXT;
ALTER TABLE jobs ADD COLUMN duration_ms BIGINT;
