-- Jobs the app can follow: progress, a reason a person can act on when a job failed, when it started and ended;
-- and Idempotency-Key records for uploads (24 h, swept).

ALTER TABLE photos ADD COLUMN progress REAL NOT NULL DEFAULT 0;
ALTER TABLE photos ADD COLUMN error TEXT;
ALTER TABLE photos ADD COLUMN started_at BIGINT;
ALTER TABLE photos ADD COLUMN completed_at BIGINT;
UPDATE photos SET progress = 1 WHERE status = 'completed';

CREATE TABLE idempotency_keys (
  user_id     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  idem_key    TEXT   NOT NULL,
  fingerprint TEXT   NOT NULL,  -- of the request: route, fields and files
  owner       TEXT   NOT NULL,  -- INSTANCE_ID of the process handling the first request
  status      INTEGER,          -- NULL while the first request is being handled
  body        TEXT,
  created_at  BIGINT NOT NULL,
  PRIMARY KEY (user_id, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
