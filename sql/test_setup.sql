--
-- Shared by the regression tests that follow (they run in order, in one
-- database): the extension, and wait_until(), which polls a condition with
-- a new snapshot each time and returns false after a timeout.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS workflows;
RESET client_min_messages;

CREATE FUNCTION wait_until(cond text, secs int DEFAULT 30) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    ok boolean;
    deadline timestamptz := clock_timestamp() + make_interval(secs => secs);
BEGIN
    LOOP
        EXECUTE cond INTO ok;
        IF ok THEN RETURN true; END IF;
        IF clock_timestamp() > deadline THEN RETURN false; END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
