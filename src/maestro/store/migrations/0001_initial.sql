-- The first layout: one row per entity holding its whole document as `json` (the text exactly
-- as written, so key order, unknown keys and big numbers round-trip), and `maestro_meta` with
-- the layout's version and the number of the last committed batch. Idempotent: a database made
-- before migrations were numbered already has all of it.
CREATE TABLE IF NOT EXISTS maestro_projects (
    id text PRIMARY KEY,
    data json NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS maestro_tasks (
    id text PRIMARY KEY,
    project_id text,
    data json NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS maestro_tasks_project_id ON maestro_tasks (project_id);
CREATE TABLE IF NOT EXISTS maestro_sessions (
    id text PRIMARY KEY,
    project_id text,
    data json NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS maestro_sessions_project_id ON maestro_sessions (project_id);
CREATE TABLE IF NOT EXISTS maestro_meta (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO maestro_meta VALUES ('schema_version', 1), ('batch_seq', 0)
    ON CONFLICT (name) DO NOTHING;
