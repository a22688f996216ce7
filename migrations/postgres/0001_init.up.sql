-- Users, photos and their upscale jobs. Times are Unix milliseconds (UTC); ids are UUID strings.

CREATE TABLE users (
  id            TEXT    NOT NULL PRIMARY KEY,
  username      TEXT    NOT NULL UNIQUE,
  password_hash TEXT    NOT NULL,
  is_active     BOOLEAN NOT NULL DEFAULT TRUE,
  created_at    BIGINT  NOT NULL
);

CREATE TABLE photos (
  id            TEXT             NOT NULL PRIMARY KEY,
  user_id       TEXT             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  original_path TEXT             NOT NULL,
  upscaled_path TEXT,
  status        TEXT             NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
  latitude      DOUBLE PRECISION NOT NULL,
  longitude     DOUBLE PRECISION NOT NULL,
  score         DOUBLE PRECISION,
  created_at    BIGINT           NOT NULL
);

-- GET /photos: one user's photos, newest first.
CREATE INDEX photos_by_user_newest ON photos (user_id, created_at DESC, id DESC);

CREATE TABLE jobs (
  id               TEXT    NOT NULL PRIMARY KEY,
  photo_id         TEXT    NOT NULL UNIQUE REFERENCES photos (id) ON DELETE CASCADE,
  kind             TEXT    NOT NULL DEFAULT 'upscale',
  state            TEXT    NOT NULL CHECK (state IN ('queued', 'processing', 'completed', 'failed')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL,
  run_at           BIGINT  NOT NULL,
  lease_owner      TEXT,
  lease_expires_at BIGINT,
  last_error       TEXT,
  created_at       BIGINT  NOT NULL,
  updated_at       BIGINT  NOT NULL,
  completed_at     BIGINT
);

-- claim: the oldest runnable job.
CREATE INDEX jobs_runnable ON jobs (run_at, created_at) WHERE state = 'queued';
-- recover: leases that ran out.
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'processing';
