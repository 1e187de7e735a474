-- What only grows gets tables of its own, so that an append writes only its new rows: task
-- timelines, session events and session timelines (one row per entry, `idx` its position), and
-- both sides of the task-session link (a task's `sessionIds`, a session's `taskIds`; one row per
-- id, in the order of `position`, which may have gaps so that removing a link deletes one row).
-- The entity row keeps every other field, and `[]` where such a list lives in its own table, so
-- the document's key order is kept. A link list holding anything but ids stays in the row.
CREATE TABLE maestro_task_timeline (
    task_id text NOT NULL,
    idx integer NOT NULL,
    entry json NOT NULL,
    PRIMARY KEY (task_id, idx)
);
CREATE TABLE maestro_session_events (
    session_id text NOT NULL,
    idx integer NOT NULL,
    entry json NOT NULL,
    PRIMARY KEY (session_id, idx)
);
CREATE TABLE maestro_session_timeline (
    session_id text NOT NULL,
    idx integer NOT NULL,
    entry json NOT NULL,
    PRIMARY KEY (session_id, idx)
);
CREATE TABLE maestro_task_sessions (
    task_id text NOT NULL,
    position integer NOT NULL,
    session_id text NOT NULL,
    PRIMARY KEY (task_id, position)
);
CREATE INDEX maestro_task_sessions_session_id ON maestro_task_sessions (session_id);
CREATE TABLE maestro_session_tasks (
    session_id text NOT NULL,
    position integer NOT NULL,
    task_id text NOT NULL,
    PRIMARY KEY (session_id, position)
);
CREATE INDEX maestro_session_tasks_task_id ON maestro_session_tasks (task_id);

-- The field of `doc` is an array of strings a text column can hold (no NUL).
CREATE FUNCTION pg_temp.maestro_id_list(doc json, field text) RETURNS boolean
LANGUAGE sql AS $$
    SELECT CASE WHEN json_typeof(doc) = 'object' AND json_typeof(doc -> field) = 'array'
        THEN NOT EXISTS (SELECT 1 FROM json_array_elements(doc -> field) AS el
                         WHERE json_typeof(el) <> 'string' OR strpos(el::text, E'\\u0000') > 0)
        ELSE false END
$$;
-- The field of `doc` is an array.
CREATE FUNCTION pg_temp.maestro_list(doc json, field text) RETURNS boolean
LANGUAGE sql AS $$
    SELECT coalesce(json_typeof(doc) = 'object' AND json_typeof(doc -> field) = 'array', false)
$$;
-- `doc` with the values of `fields` replaced by [] (key order and every other value kept).
CREATE FUNCTION pg_temp.maestro_hollow(doc json, fields text[]) RETURNS json
LANGUAGE sql AS $$
    SELECT coalesce(json_object_agg(e.key, CASE WHEN e.key = ANY (fields) THEN '[]'::json
                                                ELSE e.value END ORDER BY e.ord), '{}'::json)
    FROM json_each(doc) WITH ORDINALITY AS e(key, value, ord)
$$;

INSERT INTO maestro_task_timeline (task_id, idx, entry)
SELECT t.id, e.ord - 1, e.value FROM maestro_tasks AS t
CROSS JOIN LATERAL json_array_elements(CASE WHEN pg_temp.maestro_list(t.data, 'timeline')
                                       THEN t.data -> 'timeline' END)
    WITH ORDINALITY AS e(value, ord);
INSERT INTO maestro_session_events (session_id, idx, entry)
SELECT s.id, e.ord - 1, e.value FROM maestro_sessions AS s
CROSS JOIN LATERAL json_array_elements(CASE WHEN pg_temp.maestro_list(s.data, 'events')
                                       THEN s.data -> 'events' END)
    WITH ORDINALITY AS e(value, ord);
INSERT INTO maestro_session_timeline (session_id, idx, entry)
SELECT s.id, e.ord - 1, e.value FROM maestro_sessions AS s
CROSS JOIN LATERAL json_array_elements(CASE WHEN pg_temp.maestro_list(s.data, 'timeline')
                                       THEN s.data -> 'timeline' END)
    WITH ORDINALITY AS e(value, ord);
INSERT INTO maestro_task_sessions (task_id, position, session_id)
SELECT t.id, e.ord - 1, e.value #>> '{}' FROM maestro_tasks AS t
CROSS JOIN LATERAL json_array_elements(CASE WHEN pg_temp.maestro_id_list(t.data, 'sessionIds')
                                       THEN t.data -> 'sessionIds' END)
    WITH ORDINALITY AS e(value, ord);
INSERT INTO maestro_session_tasks (session_id, position, task_id)
SELECT s.id, e.ord - 1, e.value #>> '{}' FROM maestro_sessions AS s
CROSS JOIN LATERAL json_array_elements(CASE WHEN pg_temp.maestro_id_list(s.data, 'taskIds')
                                       THEN s.data -> 'taskIds' END)
    WITH ORDINALITY AS e(value, ord);

UPDATE maestro_tasks AS t SET data = pg_temp.maestro_hollow(t.data, array_remove(ARRAY[
        CASE WHEN pg_temp.maestro_list(t.data, 'timeline') THEN 'timeline' END,
        CASE WHEN pg_temp.maestro_id_list(t.data, 'sessionIds') THEN 'sessionIds' END], NULL))
WHERE pg_temp.maestro_list(t.data, 'timeline') OR pg_temp.maestro_id_list(t.data, 'sessionIds');
UPDATE maestro_sessions AS s SET data = pg_temp.maestro_hollow(s.data, array_remove(ARRAY[
        CASE WHEN pg_temp.maestro_list(s.data, 'events') THEN 'events' END,
        CASE WHEN pg_temp.maestro_list(s.data, 'timeline') THEN 'timeline' END,
        CASE WHEN pg_temp.maestro_id_list(s.data, 'taskIds') THEN 'taskIds' END], NULL))
WHERE pg_temp.maestro_list(s.data, 'events') OR pg_temp.maestro_list(s.data, 'timeline')
    OR pg_temp.maestro_id_list(s.data, 'taskIds');

DROP FUNCTION pg_temp.maestro_id_list(json, text);
DROP FUNCTION pg_temp.maestro_list(json, text);
DROP FUNCTION pg_temp.maestro_hollow(json, text[]);

-- Whole documents as the API shows them, for reading with SQL (reports, checks, backups).
CREATE VIEW maestro_task_documents AS
SELECT t.id, t.project_id, (
    SELECT json_object_agg(e.key, CASE
        WHEN e.key = 'timeline' AND e.value::text = '[]' THEN (
            SELECT coalesce(json_agg(x.entry ORDER BY x.idx), '[]'::json)
            FROM maestro_task_timeline AS x WHERE x.task_id = t.id)
        WHEN e.key = 'sessionIds' AND e.value::text = '[]' THEN (
            SELECT coalesce(json_agg(x.session_id ORDER BY x.position), '[]'::json)
            FROM maestro_task_sessions AS x WHERE x.task_id = t.id)
        ELSE e.value END ORDER BY e.ord)
    FROM json_each(t.data) WITH ORDINALITY AS e(key, value, ord)) AS data
FROM maestro_tasks AS t WHERE json_typeof(t.data) = 'object';
CREATE VIEW maestro_session_documents AS
SELECT s.id, s.project_id, (
    SELECT json_object_agg(e.key, CASE
        WHEN e.key = 'events' AND e.value::text = '[]' THEN (
            SELECT coalesce(json_agg(x.entry ORDER BY x.idx), '[]'::json)
            FROM maestro_session_events AS x WHERE x.session_id = s.id)
        WHEN e.key = 'timeline' AND e.value::text = '[]' THEN (
            SELECT coalesce(json_agg(x.entry ORDER BY x.idx), '[]'::json)
            FROM maestro_session_timeline AS x WHERE x.session_id = s.id)
        WHEN e.key = 'taskIds' AND e.value::text = '[]' THEN (
            SELECT coalesce(json_agg(x.task_id ORDER BY x.position), '[]'::json)
            FROM maestro_session_tasks AS x WHERE x.session_id = s.id)
        ELSE e.value END ORDER BY e.ord)
    FROM json_each(s.data) WITH ORDINALITY AS e(key, value, ord)) AS data
FROM maestro_sessions AS s WHERE json_typeof(s.data) = 'object';
