-- examples/order_saga.sql: an order made of workflows, undone when it fails.
--
-- An order calls a payment workflow (a child instance) and maps a shipment
-- workflow over its items (one child per item, two at a time).  The
-- payment's call has a rollback: if anything after it fails -- here, a
-- shipment of an item that cannot be shipped -- the order's uncaught error
-- runs that compensation, which refunds the payment, before the order ends
-- errored.  The order publishes its stage with set_event(), read from
-- outside with get_event().  Two orders show both paths.  Run it again as
-- often as you like.
--
--   psql -h 127.0.0.1 -p 5499 -U postgres -f examples/order_saga.sql

\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS workflows;

CREATE TABLE IF NOT EXISTS payments (
    instance  text PRIMARY KEY,          -- the payment workflow's instance
    order_id  text NOT NULL,
    amount    numeric NOT NULL,
    refunded  timestamptz
);
CREATE TABLE IF NOT EXISTS shipments (
    instance  text PRIMARY KEY,          -- the shipment workflow's instance
    order_id  text NOT NULL,
    item      text NOT NULL
);

-- the payment: one step that charges (here: records the charge)
CREATE OR REPLACE FUNCTION payment(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('charge',
        'INSERT INTO payments (instance, order_id, amount) VALUES ($1, $2, $3::numeric)
         ON CONFLICT (instance) DO NOTHING
         RETURNING jsonb_build_object(''payment'', instance, ''amount'', amount)',
        jsonb_build_array(event->>'instanceId', event->'payload'->>'order',
                          event->'payload'->>'amount'));
END $$;

-- a shipment of one item; "broken" items cannot be shipped (WF001: no retry)
CREATE OR REPLACE FUNCTION shipment(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    item text := event->'payload'->>'item';
BEGIN
    IF item LIKE 'broken%' THEN
        PERFORM workflows.step('ship', 'SELECT workflows.fail(''cannot ship '' || $1)',
                               jsonb_build_array(item));
    END IF;
    RETURN workflows.step('ship',
        'INSERT INTO shipments (instance, order_id, item) VALUES ($1, $2, $3)
         ON CONFLICT (instance) DO NOTHING RETURNING to_jsonb($3)',
        jsonb_build_array(event->>'instanceId', event->'payload'->>'order', item));
END $$;

-- the order: pay (with a refund as its rollback), then ship every item
CREATE OR REPLACE FUNCTION order_saga(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    o jsonb := event->'payload';
    paid jsonb;
    shipped jsonb;
BEGIN
    paid := workflows.call('pay', 'payment',
        jsonb_build_object('order', o->>'order', 'amount', o->'amount'),
        -- the spawn step's compensation gets the ids of its children
        '{"rollback": "UPDATE public.payments SET refunded = now() WHERE instance IN (SELECT jsonb_array_elements_text($1::jsonb)) RETURNING 1"}');
    PERFORM workflows.set_event('stage', '"paid"');

    shipped := workflows.map('ship', 'shipment',
        (SELECT jsonb_agg(jsonb_build_object('order', o->>'order', 'item', i))
           FROM jsonb_array_elements_text(o->'items') i),
        '{"concurrency": 2}');
    PERFORM workflows.set_event('stage', '"shipped"');
    RETURN jsonb_build_object('payment', paid, 'shipped', shipped);
END $$;

SELECT workflows.register('payment', 'payment(jsonb)') AS payment_version;
SELECT workflows.register('shipment', 'shipment(jsonb)') AS shipment_version;
SELECT workflows.register('order', 'order_saga(jsonb)') AS order_version;

SELECT workflows.create('order', jsonb_build_object('order', 'o-' || substr(md5(random()::text), 1, 8), 'amount', 42.50,
           'items', '["book", "lamp", "mug"]'::jsonb)) AS good \gset
SELECT workflows.create('order', jsonb_build_object('order', 'o-' || substr(md5(random()::text), 1, 8), 'amount', 99,
           'items', '["chair", "broken vase", "rug"]'::jsonb)) AS bad \gset

-- the first order ships everything
SELECT d->>'status' AS status, d->'output' AS output FROM workflows.wait(:'good', '1 minute') d;
SELECT workflows.get_event(:'good', 'stage') AS stage;
-- the second fails at the broken vase: the payment is refunded
SELECT d->>'status' AS status, d->'error'->>'message' AS error, d->'error'->>'detail' AS detail
  FROM workflows.wait(:'bad', '1 minute') d;
SELECT workflows.get_event(:'bad', 'stage') AS stage;

SELECT p.instance = :'good' || '/pay' AS good_order, p.amount, p.refunded IS NOT NULL AS refunded
  FROM payments p WHERE p.instance IN (:'good' || '/pay', :'bad' || '/pay') ORDER BY 1 DESC;

SELECT * FROM workflows.describe(:'bad');
