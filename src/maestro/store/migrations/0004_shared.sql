-- What every server of one database shares beside the entities.
-- The SHA-256 digest of each spawned session's bearer token (the token itself is never stored):
-- written when the token is minted, removed when its session ends, is revoked or is deleted,
-- so that a token minted by one server is accepted by all of them. A digest stands only for
-- the session of that `startedAt` (ms, set when it is created), never for one created again
-- under the same id.
CREATE TABLE maestro_session_tokens (
    session_id text PRIMARY KEY,
    digest text NOT NULL,
    session_started_at bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The servers serving the database and their heartbeats (the database's clock). A server whose
-- heartbeat is older than the timeout is taken over once, by the first server to notice:
-- `taken_over_by` is set by a conditional update, and its live agents' sessions are marked
-- failed; `takeover_done_at` says that was finished.
CREATE TABLE maestro_replicas (
    replica_id text PRIMARY KEY,
    url text NOT NULL DEFAULT '',
    pid integer,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    taken_over_by text,
    taken_over_at timestamptz,
    takeover_done_at timestamptz
);
