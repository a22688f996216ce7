ALTER TABLE jobs DROP COLUMN duration_ms;
ALTER TABLE jobs DROP COLUMN model;
DROP TABLE workers;
