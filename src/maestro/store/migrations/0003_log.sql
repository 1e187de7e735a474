-- The log that every replica of one database writes through and follows. `log_seq` in
-- maestro_meta numbers the records (one per change request) and `event_seq` their events;
-- each record is a row of maestro_log: its changes (whole values or deltas, deletions), its
-- events and, on the last row of a batch, the link rows the batch changed (see postgres_log.py;
-- JSON kept as text: written once, read whole, never queried).
-- A batch appends through maestro_log_append, which locks the counter row first: a writer
-- whose memory is behind the log is refused and catches up before it tries again, so writes
-- are serialized in log order and every rule is checked against current state.
INSERT INTO maestro_meta VALUES ('log_seq', 0), ('event_seq', 0) ON CONFLICT (name) DO NOTHING;
CREATE TABLE maestro_log (
    seq bigint PRIMARY KEY,
    first_event bigint NOT NULL,
    origin text NOT NULL,
    record text NOT NULL,
    shapes text,
    written_at timestamptz NOT NULL DEFAULT now()
);
-- Take the next `records` record numbers and `events` event numbers when the log is at
-- `expected` (else raise SQLSTATE MLOG1); at commit, tells the listeners of `channel` the new
-- head and who wrote it ('<head> <origin>').
CREATE FUNCTION maestro_log_append(expected bigint, records integer, events integer,
                                   channel text, origin text) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    head bigint;
    first bigint;
BEGIN
    SELECT value INTO head FROM maestro_meta WHERE name = 'log_seq' FOR UPDATE;
    IF head <> expected THEN
        RAISE EXCEPTION 'the log is at %, this writer at %', head, expected
            USING ERRCODE = 'MLOG1';
    END IF;
    UPDATE maestro_meta SET value = head + records WHERE name = 'log_seq';
    UPDATE maestro_meta SET value = value + events WHERE name = 'event_seq'
        RETURNING value - events INTO first;
    PERFORM pg_notify(channel, (head + records)::text || ' ' || origin);
    RETURN first;
END
$$;
