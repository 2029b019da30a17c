-- examples/approval.sql: wait for a person, but not forever.
--
-- An expense is submitted, then the workflow waits for an "approval"
-- event.  If it comes, the decision is recorded; if it does not come in
-- time, wait_for_event() raises WF002, which the workflow catches to
-- reject the expense automatically.  Two instances show both paths.
-- Run it again as often as you like.
--
--   psql -h 127.0.0.1 -p 5499 -U postgres -f examples/approval.sql

\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS workflows;

CREATE TABLE IF NOT EXISTS expenses (
    instance   text PRIMARY KEY,
    employee   text NOT NULL,
    amount     numeric NOT NULL,
    state      text NOT NULL DEFAULT 'submitted',
    decided_by text,
    decided_at timestamptz
);

CREATE OR REPLACE FUNCTION expense_approval(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    p jsonb := event->'payload';
    timeout interval := COALESCE(p->>'timeout', '1 hour')::interval;
    decision jsonb;
BEGIN
    PERFORM workflows.step('submit',
        'INSERT INTO expenses (instance, employee, amount) VALUES ($1, $2, $3::numeric)',
        jsonb_build_array(id, p->>'employee', p->>'amount'));

    -- wait for the manager; the instance holds no process meanwhile
    BEGIN
        decision := workflows.wait_for_event('wait for approval', 'approval', timeout);
    EXCEPTION WHEN SQLSTATE 'WF002' THEN
        decision := NULL;           -- nobody answered in time
    END;

    IF decision IS NULL THEN
        PERFORM workflows.step('reject: no answer',
            'UPDATE expenses SET state = ''rejected'', decided_by = ''timeout'', decided_at = now()
              WHERE instance = $1',
            jsonb_build_array(id));
        RETURN jsonb_build_object('approved', false,
                                  'reason', format('no answer within %s', COALESCE(p->>'timeout', '1 hour')));
    END IF;

    PERFORM workflows.step('record decision',
        'UPDATE expenses SET state = CASE WHEN $2::boolean THEN ''approved'' ELSE ''rejected'' END,
                decided_by = $3, decided_at = now()
          WHERE instance = $1',
        jsonb_build_array(id, decision->'payload'->'approved', decision->'payload'->>'by'));
    RETURN jsonb_build_object('approved', decision->'payload'->'approved',
                              'by', decision->'payload'->'by',
                              'decided_at', decision->'timestamp');
END
$$;

SELECT workflows.register('expense-approval', 'expense_approval(jsonb)') AS version;

SELECT workflows.create('expense-approval',
    '{"employee": "ada", "amount": 120.50, "timeout": "10 minutes"}') AS answered \gset
SELECT workflows.create('expense-approval',
    '{"employee": "grace", "amount": 89, "timeout": "3 seconds"}') AS unanswered \gset

-- both wait for an event now (psql variables do not reach into the DO
-- block's body, so the ids go through settings)
SET example.answered = :'answered';
SET example.unanswered = :'unanswered';
DO $$
BEGIN
    FOR i IN 1 .. 200 LOOP
        EXIT WHEN (SELECT count(*) FROM workflows.instances
                    WHERE id IN (current_setting('example.answered'), current_setting('example.unanswered'))
                      AND waiting_for = 'approval') = 2;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT id = :'answered' AS answered, status, waiting_for
  FROM workflows.instances WHERE id IN (:'answered', :'unanswered') ORDER BY 1 DESC;

-- the manager approves the first one (an event sent before the instance
-- waits for it would be kept for it, too)
SELECT workflows.send_event(:'answered', 'approval', '{"approved": true, "by": "manager"}');

SELECT d->>'status' AS status, d->'output' AS output
  FROM workflows.wait(:'answered', '1 minute') d;
-- the second one times out after 3 seconds and is rejected
SELECT d->>'status' AS status, d->'output' AS output
  FROM workflows.wait(:'unanswered', '1 minute') d;

SELECT employee, amount, state, decided_by FROM expenses
 WHERE instance IN (:'answered', :'unanswered') ORDER BY employee;

SELECT * FROM workflows.describe(:'unanswered');
