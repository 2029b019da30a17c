-- examples/quickstart.sql: the file-processing pipeline of the README's
-- quickstart.  List the files in one step, ask an API about them (an HTTP
-- step, outside any transaction), process each file in a step of its own,
-- write a summary; then show the instance's status.
--
--   psql -h 127.0.0.1 -p 5499 -U postgres -v api=http://127.0.0.1:PORT \
--        -f examples/quickstart.sql
--
-- (tools/quickstart.sh starts a demo API on loopback and passes its URL)

\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS workflows;

CREATE TABLE IF NOT EXISTS uploads (name text PRIMARY KEY, size_kb int);
INSERT INTO uploads VALUES
    ('doc_7392_rev3.pdf', 120), ('report_x29_final.pdf', 480),
    ('memo_2024_05_12.pdf', 12), ('data_analysis_q2.pdf', 900)
ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS processed_files (
    instance text, name text, chunks int, processed_at timestamptz DEFAULT now());

CREATE OR REPLACE FUNCTION process_uploads(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    files jsonb;
    answer jsonb;
    f text;
BEGIN
    -- step 1: list the files (memoized: replays never re-read the table)
    files := workflows.step('list files',
        'SELECT jsonb_agg(name ORDER BY name) FROM uploads');

    -- step 2: an API call, made outside any transaction, retried on 5xx,
    -- with an Idempotency-Key the API can use to do it once
    answer := workflows.http('announce files', jsonb_build_object(
        'method', 'POST',
        'url', event->'payload'->>'api' || '/echo',
        'body', jsonb_build_object('bucket', event->'payload'->>'bucket', 'files', files)),
        config => '{"retries": {"limit": 3, "delay": "1 second"}}');

    -- one step per file, created dynamically; each commits with its memo
    FOR f IN SELECT jsonb_array_elements_text(files) LOOP
        PERFORM workflows.step('process ' || f,
            'INSERT INTO processed_files (instance, name, chunks)
             SELECT $1, name, ceil(size_kb / 100.0) FROM uploads WHERE name = $2
             RETURNING chunks',
            jsonb_build_array(event->>'instanceId', f),
            config => '{"retries": {"limit": 3, "delay": "1 second", "backoff": "exponential"}}');
    END LOOP;

    -- last step: a summary, which is also the instance's output
    RETURN workflows.step('summary',
        'SELECT jsonb_build_object(''files'', count(*), ''chunks'', sum(chunks))
           FROM processed_files WHERE instance = $1',
        jsonb_build_array(event->>'instanceId'));
END
$$;

SELECT workflows.register('process-uploads', 'process_uploads(jsonb)') AS version;
SELECT workflows.create('process-uploads',
    jsonb_build_object('bucket', 'uploads', 'api', :'api')) AS instance \gset

-- wait() blocks until the instance is final, without polling
SELECT workflows.wait(:'instance', '30 seconds')->>'status' AS status;
SELECT jsonb_pretty(workflows.status(:'instance'));
