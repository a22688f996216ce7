DROP TABLE idempotency_keys;
ALTER TABLE photos DROP COLUMN completed_at;
ALTER TABLE photos DROP COLUMN started_at;
ALTER TABLE photos DROP COLUMN error;
ALTER TABLE photos DROP COLUMN progress;
