-- examples/abandoned_cart.sql: remind customers of the carts they left.
--
-- For every cart: wait (a day in real life; a few seconds here), read the
-- cart, and if it was not checked out, send a reminder email.  The mail
-- server is unreliable: it refuses the first two attempts of every email.
-- The email step retries with exponential backoff (1 s, then 2 s), and its
-- effect (the row in "outbox") is written once, by the attempt that
-- succeeds.  Run it again as often as you like.
--
--   psql -h 127.0.0.1 -p 5499 -U postgres -f examples/abandoned_cart.sql

\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS workflows;

CREATE TABLE IF NOT EXISTS carts (
    id          int PRIMARY KEY,
    customer    text NOT NULL,
    email       text NOT NULL,
    items       jsonb NOT NULL,
    checked_out boolean NOT NULL DEFAULT false
);
INSERT INTO carts VALUES
    (1, 'Ada', 'ada@example.com', '["teapot", "2 cups"]', false),
    (2, 'Grace', 'grace@example.com', '["kettle"]', true)
ON CONFLICT (id) DO UPDATE SET checked_out = EXCLUDED.checked_out;

-- the emails "sent": one per instance at most
CREATE TABLE IF NOT EXISTS outbox (
    instance text PRIMARY KEY,
    email    text NOT NULL,
    subject  text NOT NULL,
    body     text NOT NULL,
    sent_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Send the reminder through a mail server that refuses the first two tries
-- of each email.  How many tries failed before is in workflows.attempts:
-- the extension records every attempt of a step (a failed attempt's own
-- writes are rolled back, so a counter table would stay at zero).
CREATE OR REPLACE FUNCTION send_reminder(instance text, cart jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    failures int;
BEGIN
    SELECT count(*) INTO failures FROM workflows.attempts
     WHERE instance_id = instance AND step_key = 'send reminder' AND NOT success;
    IF failures < 2 THEN
        RAISE EXCEPTION 'SMTP 421: mail server busy, try again later (try %)', failures + 1;
    END IF;
    INSERT INTO outbox (instance, email, subject, body)
    VALUES (instance, cart->>'email', 'You left something in your cart',
            format('Hi %s, your %s are still waiting for you.',
                   cart->>'customer', cart->'items'));
    RETURN jsonb_build_object('to', cart->>'email', 'try', failures + 1);
END
$$;

CREATE OR REPLACE FUNCTION abandoned_cart(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    cart_id int := (event->'payload'->>'cart_id')::int;
    cart jsonb;
    sent jsonb;
BEGIN
    -- in real life: '1 day'; the instance waits without holding a process
    PERFORM workflows.sleep('wait before reminding',
                            COALESCE(event->'payload'->>'wait', '3 seconds')::interval);

    -- read the cart as it is now (memoized: a replay does not read it again)
    cart := workflows.step('load cart',
        'SELECT to_jsonb(c) FROM carts c WHERE c.id = $1::int',
        jsonb_build_array(cart_id));
    IF cart IS NULL THEN
        RETURN jsonb_build_object('reminded', false, 'reason', 'no such cart');
    ELSIF (cart->>'checked_out')::boolean THEN
        RETURN jsonb_build_object('reminded', false, 'reason', 'checked out');
    END IF;

    sent := workflows.step('send reminder',
        'SELECT send_reminder($1, $2::jsonb)',
        jsonb_build_array(event->>'instanceId', cart),
        config => '{"retries": {"limit": 5, "delay": "1 second", "backoff": "exponential"}}');
    RETURN jsonb_build_object('reminded', true, 'email', sent);
END
$$;

SELECT workflows.register('abandoned-cart', 'abandoned_cart(jsonb)') AS version;

-- one instance per cart
SELECT workflows.create('abandoned-cart', '{"cart_id": 1}') AS ada \gset
SELECT workflows.create('abandoned-cart', '{"cart_id": 2}') AS grace \gset

-- Ada did not check out: reminded, after two refused tries (about 3 s of
-- sleep, then 1 s and 2 s of backoff)
SELECT d->>'status' AS status, d->'output' AS output
  FROM workflows.wait(:'ada', '1 minute') d;
-- Grace did: no email
SELECT d->>'status' AS status, d->'output' AS output
  FROM workflows.wait(:'grace', '1 minute') d;

-- every try of the email step, and the one email it wrote
SELECT attempt, success, error->>'message' AS error,
       round(extract(epoch FROM started_at - lag(ended_at) OVER (ORDER BY attempt)), 1) AS waited_s
  FROM workflows.attempts
 WHERE instance_id = :'ada' AND step_key = 'send reminder'
 ORDER BY attempt;
SELECT email, subject, body FROM outbox WHERE instance = :'ada';

SELECT * FROM workflows.describe(:'ada');
