-- The log's records are compressed with lz4 where the server has it (PostgreSQL 14 and later,
-- built with lz4): a record of a few kB is stored several times faster than with the default
-- pglz, and read back faster. Elsewhere the default stays; nothing else depends on it.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE maestro_log ALTER COLUMN record SET COMPRESSION lz4, '
            'ALTER COLUMN shapes SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'maestro_log keeps the default compression: %', SQLERRM;
END
$$;
