# 022_composition.pl
#
# Composition under crashes and concurrency (issue 15):
#
#  1. SIGKILL of an executor in the middle of a spawn, and again in the
#     middle of a map, leaves exactly one child per spawn step (and one per
#     map input): the killed attempt's children were rolled back with its
#     memo, the retry creates them once.  The spawns are really blocked
#     inside their INSERT (a test trigger on workflows.instances waits for a
#     row in table "go"), and the executor is really killed.
#  2. A map with options.concurrency = 2 never has more than two children
#     running, and returns the outputs in input order.
#  3. Nesting 5 deep works; runaway recursion stops at workflows.max_depth
#     with WF012.
#  4. Terminating the root of a tree while its leaves run steps (held by
#     executors) terminates every live descendant.
#  5. Rollback handlers run in reverse order, a failing compensation is
#     retried, and the instance keeps its original error.
#  6. Published values (and, with workflows.notify_steps, every step) are
#     announced on channel workflows_progress.
#  7. examples/order_saga.sql runs and refunds the order that failed.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('composition');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
workflows.max_depth = 5
max_worker_processes = 16
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION workflows');
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
	'2')
  or die 'executors did not start';

$node->safe_psql(
	'postgres', q{
CREATE TABLE go (phase text PRIMARY KEY);
CREATE TABLE effects (instance text NOT NULL);

-- the test's gate: a spawn of step "a" or "b" waits inside its INSERT until
-- the phase is open
CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.spawned_by IN ('a', 'b') THEN
        WHILE NOT EXISTS (SELECT 1 FROM public.go WHERE phase = NEW.spawned_by) LOOP
            PERFORM pg_sleep(0.02);
        END LOOP;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER gate BEFORE INSERT ON workflows.instances
    FOR EACH ROW EXECUTE FUNCTION gate();

CREATE FUNCTION kid(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('effect',
        'INSERT INTO public.effects VALUES ($1::text) RETURNING $2::int * 10',
        jsonb_build_array(event->>'instanceId', event->'payload'->>'n'));
END $$;
SELECT workflows.register('kid', 'kid(jsonb)');

CREATE FUNCTION parent(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    one jsonb;
    many jsonb;
BEGIN
    one := workflows.call('a', 'kid', '{"n": 0}');
    many := workflows.map('b', 'kid', '[{"n": 1}, {"n": 2}, {"n": 3}]');
    RETURN jsonb_build_object('one', one, 'many', many);
END $$;
SELECT workflows.register('parent', 'parent(jsonb)');
});

my $nparents = 4;
$node->safe_psql('postgres',
	"SELECT workflows.create('parent', '{}', 'p' || i) FROM generate_series(1, $nparents) i");

# kill an executor while it waits in the gate of phase $phase, then open it
sub crash_in
{
	my ($phase) = @_;
	# an executor in the gate alternates between pg_sleep() and its
	# check: find it and take its pid in one query
	my $victim = '';
	for (my $i = 0; $i < 1500 && $victim eq ''; $i++)
	{
		$victim = $node->safe_psql(
			'postgres', q{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'workflows executor' AND wait_event = 'PgSleep'
 ORDER BY pid LIMIT 1
});
		usleep(20_000) if $victim eq '';
	}
	die "no executor blocked in the spawn of phase $phase" if $victim eq '';
	my $offset = -s $node->logfile;
	ok(kill('KILL', $victim), "phase $phase: SIGKILL to executor $victim inside a spawn");
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	$node->poll_query_until('postgres', 'SELECT 1', '1')
	  or die 'server did not come back after the crash';
	like(slurp_file($node->logfile, $offset),
		qr/\Q(PID $victim) was terminated by signal 9\E/,
		"phase $phase: the executor was killed by signal 9");
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM workflows.instances WHERE spawned_by = '$phase'"),
		'0', "phase $phase: the killed spawn left no child");
	$node->safe_psql('postgres', "INSERT INTO go VALUES ('$phase')");
}

crash_in('a');
crash_in('b');

$node->poll_query_until('postgres',
	"SELECT count(*) FROM workflows.instances WHERE id LIKE 'p_' AND status = 'complete'",
	$nparents)
  or die 'parents did not complete after the crashes';

is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(DISTINCT output::text, ',') FROM workflows.instances WHERE id LIKE 'p_'
}),
	'{"one": 0, "many": [10, 20, 30]}',
	'every parent got its call and map results, in input order');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FILTER (WHERE spawned_by = 'a') || '/' || count(*) FILTER (WHERE spawned_by = 'b')
  FROM workflows.instances WHERE parent IS NOT NULL
}),
	(1 * $nparents) . '/' . (3 * $nparents),
	'exactly one child per spawn step and one per map input');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) || '/' || count(DISTINCT instance) FROM effects
}),
	(4 * $nparents) . '/' . (4 * $nparents),
	'every child ran its step exactly once');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM workflows.instances p
 WHERE p.id LIKE 'p_' AND (SELECT s.output FROM workflows.steps s
                            WHERE s.instance_id = p.id AND s.key = 'b')
       IS DISTINCT FROM (SELECT jsonb_agg(c.id ORDER BY c.id) FROM workflows.instances c
                          WHERE c.parent = p.id AND c.spawned_by = 'b')
}),
	'0',
	'the memo of each map names exactly the children that exist');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM workflows.attempts WHERE error->>'sqlstate' = 'WF008'
}) > 0 ? 1 : 0,
	1,
	'the killed attempts are recorded as crashed (WF008) and were retried');
$node->safe_psql('postgres', 'DROP TRIGGER gate ON workflows.instances');

# 2. a bounded map
$node->safe_psql(
	'postgres', q{
CREATE TABLE running_now (at timestamptz DEFAULT clock_timestamp(), n int);
CREATE FUNCTION slow_kid(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('work', 'SELECT pg_sleep(0.2)');
    RETURN event->'payload'->'n';
END $$;
SELECT workflows.register('slow_kid', 'slow_kid(jsonb)');
CREATE FUNCTION bounded(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.map('m', 'slow_kid',
        (SELECT jsonb_agg(jsonb_build_object('n', i)) FROM generate_series(1, 6) i),
        '{"concurrency": 2}');
END $$;
SELECT workflows.register('bounded', 'bounded(jsonb)');
SELECT workflows.create('bounded', '{}', 'bounded');
});
my $max_live = 0;
for (1 .. 200)
{
	my ($live, $done) = split /\|/, $node->safe_psql(
		'postgres', q{
SELECT count(*) FILTER (WHERE NOT held AND status IN ('queued', 'running', 'waiting')),
       (SELECT status FROM workflows.instances WHERE id = 'bounded') = 'complete'
  FROM workflows.instances WHERE parent = 'bounded'
});
	$max_live = $live if $live > $max_live;
	last if $done eq 't';
	select(undef, undef, undef, 0.05);
}
ok($max_live >= 1 && $max_live <= 2, "at most two children of the bounded map ran at once ($max_live)");
$node->poll_query_until('postgres',
	"SELECT status FROM workflows.instances WHERE id = 'bounded'", 'complete')
  or die 'bounded map did not complete';
is($node->safe_psql('postgres', "SELECT output FROM workflows.instances WHERE id = 'bounded'"),
	'[1, 2, 3, 4, 5, 6]', 'the bounded map returns every output in input order');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM workflows.instances c JOIN workflows.instances d
    ON d.parent = c.parent AND d.id <> c.id
 WHERE c.parent = 'bounded' AND d.started_at < c.ended_at AND d.ended_at > c.started_at
   AND (SELECT count(*) FROM workflows.instances e
         WHERE e.parent = 'bounded' AND e.started_at < c.ended_at AND e.ended_at > c.started_at
           AND e.started_at < d.ended_at AND e.ended_at > d.started_at
           AND e.id NOT IN (c.id, d.id)
           AND greatest(c.started_at, d.started_at, e.started_at)
               < least(c.ended_at, d.ended_at, e.ended_at)) > 0
}),
	'0', 'no three children of the bounded map ever overlapped');

# 2b. many maps at once: every parent is woken once all its children ended
# (no event per child: the sweep after the last child's commit), none lost
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION many_maps(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.map('m', 'kid',
        (SELECT jsonb_agg(jsonb_build_object('n', i)) FROM generate_series(1, 10) i));
END $$;
SELECT workflows.register('many_maps', 'many_maps(jsonb)');
SELECT count(*) FROM workflows.create_batch('many_maps',
    (SELECT jsonb_agg(jsonb_build_object('id', 'mm-' || i, 'params', '{}'::jsonb))
       FROM generate_series(1, 30) i));
});
$node->poll_query_until('postgres',
	q{SELECT count(*) FROM workflows.instances WHERE id ~ '^mm-[0-9]+$' AND status = 'complete'}, '30')
  or die 'not every parent of the concurrent maps completed';
is( $node->safe_psql(
		'postgres', q{
SELECT count(DISTINCT output::text) || '/' || max(revision)
  FROM workflows.instances WHERE id ~ '^mm-[0-9]+$'
}) =~ m{^1/(\d+)$} ? ($1 <= 4 ? 'few' : "woken $1 times") : 'different outputs',
	'few',
	'30 concurrent maps: same outputs, each parent committed a handful of times, not once per child');

# 3. nesting 5 deep works; deeper is refused with WF012
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION nest(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    level int := (event->'payload'->>'level')::int;
BEGIN
    IF level = 0 THEN
        RETURN '"bottom"';
    END IF;
    RETURN jsonb_build_object('level', level,
        'inner', workflows.call('down', 'nest', jsonb_build_object('level', level - 1)));
END $$;
SELECT workflows.register('nest', 'nest(jsonb)');
SELECT workflows.create('nest', '{"level": 5}', 'nest5');
SELECT workflows.create('nest', '{"level": 7}', 'nest7');
});
$node->poll_query_until('postgres',
	"SELECT string_agg(status, ',' ORDER BY id) FROM workflows.instances WHERE id IN ('nest5', 'nest7')",
	'complete,errored')
  or die 'nested instances did not finish';
is($node->safe_psql('postgres', "SELECT max(depth) FROM workflows.instances WHERE root = 'nest5'"),
	'5', 'nest5: five levels of children');
like($node->safe_psql('postgres', "SELECT output FROM workflows.instances WHERE id = 'nest5'"),
	qr/"inner": "bottom"/, 'nest5: the innermost output reached the root');
is($node->safe_psql('postgres', "SELECT error->>'sqlstate' FROM workflows.instances WHERE id = 'nest7'"),
	'WF012', 'nest7: the depth limit errors the root with WF012');
like( $node->safe_psql(
		'postgres',
		"SELECT error->>'message' FROM workflows.instances WHERE root = 'nest7' AND depth = 5"),
	qr/is nested 5 deep and may not spawn children/,
	'nest7: the instance at the limit says why');

# 4. cascade under concurrency: terminate a tree while its leaves run steps
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION busy(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    level int := (event->'payload'->>'level')::int;
BEGIN
    IF level > 0 THEN
        RETURN workflows.map('kids', 'busy',
            jsonb_build_array(jsonb_build_object('level', level - 1),
                              jsonb_build_object('level', level - 1),
                              jsonb_build_object('level', level - 1)));
    END IF;
    FOR i IN 1 .. 1000 LOOP
        PERFORM workflows.step('work', 'SELECT pg_sleep(0.05)', NULL, '{"inline": false}');
    END LOOP;
    RETURN '"done"';
END $$;
SELECT workflows.register('busy', 'busy(jsonb)');
SELECT workflows.create('busy', '{"level": 2}', 'tree');
});
$node->poll_query_until('postgres',
	"SELECT count(*) FROM workflows.instances WHERE root = 'tree'", '12')
  or die 'the tree did not grow to 12 descendants';
$node->poll_query_until(
	'postgres', q{
SELECT count(*) >= 2 FROM workflows._in_flight() f
  JOIN workflows.instances i ON i.id = f.instance WHERE i.root = 'tree' AND i.depth = 2
}, 't')
  or die 'leaves of the tree did not start running';
is($node->safe_psql('postgres', "SELECT count(*) FROM workflows.instances WHERE root = 'tree'"),
	'12', 'the tree has 3 children and 9 grandchildren');
$node->safe_psql('postgres', "SELECT workflows.terminate('tree')");
$node->poll_query_until(
	'postgres', q{
SELECT count(*) FROM workflows.instances
 WHERE (id = 'tree' OR root = 'tree') AND status <> 'terminated'
}, '0')
  or die 'the tree was not terminated';
ok(1, 'terminate of the root ended all 13 instances, running leaves included');
is($node->safe_psql('postgres', "SELECT count(*) FROM workflows.requests"),
	'0', 'no command was left behind');

# 5. rollback handlers: reverse order, a failing compensation that retries
$node->safe_psql(
	'postgres', q{
CREATE TABLE undo (n serial, what text);
CREATE FUNCTION public.undo_b(out_ jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    -- fails on its first two attempts (counted in the attempts table,
    -- which keeps the failed ones)
    IF (SELECT count(*) FROM workflows.attempts
         WHERE instance_id = 'saga' AND step_key = 'rollback:b') < 2 THEN
        RAISE EXCEPTION 'compensation service unavailable';
    END IF;
    INSERT INTO public.undo (what) VALUES ('undo b ' || (out_->>'b'));
    RETURN 'true';
END $$;
CREATE FUNCTION saga(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('a', 'SELECT 1', NULL,
        '{"rollback": "INSERT INTO public.undo (what) VALUES (''undo a '' || $1) RETURNING 1"}');
    PERFORM workflows.step('b', 'SELECT ''{"b": 2}''::jsonb', NULL,
        '{"rollback": "public.undo_b(jsonb)", "retries": {"limit": 5, "delay": "50 milliseconds", "backoff": "constant"}}');
    PERFORM workflows.step('c', 'SELECT 3', NULL,
        '{"rollback": "INSERT INTO public.undo (what) VALUES (''undo c '' || $1) RETURNING 1"}');
    PERFORM workflows.step('d', 'SELECT 4');
    PERFORM workflows.step('fail', 'SELECT 1/0', NULL, '{"retries": {"limit": 0}}');
    RETURN '"unreachable"';
END $$;
SELECT workflows.register('saga', 'saga(jsonb)');
SELECT workflows.create('saga', '{}', 'saga');
});
$node->poll_query_until('postgres',
	"SELECT status FROM workflows.instances WHERE id = 'saga'", 'errored')
  or die 'saga did not end';
is($node->safe_psql('postgres', "SELECT string_agg(what, ',' ORDER BY n) FROM undo"),
	'undo c 3,undo b 2,undo a 1', 'compensations ran once each, latest first');
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(step_key || '=' || success, ',' ORDER BY started_at)
  FROM workflows.attempts WHERE instance_id = 'saga' AND step_key = 'rollback:b'
}),
	'rollback:b=false,rollback:b=false,rollback:b=true',
	'the failing compensation was retried until it worked');
is($node->safe_psql('postgres', "SELECT error->>'sqlstate' FROM workflows.instances WHERE id = 'saga'"),
	'22012', 'the instance keeps the error that started the rollback');

# 6. the progress stream is announced: published values always, other
# steps with workflows.notify_steps (only ids, keys and positions)
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION talker(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('quiet', 'SELECT ''{"secret": "do not notify me"}''::jsonb');
    PERFORM workflows.set_event('stage', '"half way"');
    RETURN '"done"';
END $$;
SELECT workflows.register('talker', 'talker(jsonb)');
});
# LISTEN in a session of its own, run $sql, then ask again until the
# announcement $want has arrived: what an executor announces reaches the
# listener once the executor has signalled it after its commit, which may
# come after wait() saw the instance end -- a fixed pause is no bound on a
# loaded machine.  Returns everything the session printed.
sub listen_for
{
	my ($sql, $want) = @_;
	my $l = $node->background_psql('postgres');
	my $out = $l->query_safe('LISTEN workflows_progress');
	$out .= $l->query_safe($sql);
	my $deadline = time + 60;
	while ($out !~ $want && time < $deadline)
	{
		usleep(50_000);
		$out .= $l->query_safe('SELECT 1');
	}
	$l->quit;
	return $out;
}
my $heard = listen_for(
	q{SELECT workflows.create('talker', '{}', 'talk-1');
SELECT workflows.wait('talk-1', '60 s')->>'status';},
	qr/"id": "talk-1", "seq": 2/);
like($heard,
	qr/Asynchronous notification "workflows_progress" with payload "\{"id": "talk-1", "seq": 2, "key": "set_event:stage", "status": "complete"\}"/,
	'a published value is announced on workflows_progress');
unlike($heard, qr/"key": "quiet"/, 'other steps are not, by default');
unlike($heard, qr/do not notify me|half way/, 'no data in the announcements');
# a restart, not a reload: the executors announce, and a running executor
# reads a reloaded file when it gets round to it (no fixed pause makes sure
# of that on a loaded machine); started afterwards, they have the setting
$node->append_conf('postgresql.conf', 'workflows.notify_steps = on');
$node->restart;
$heard = listen_for(
	q{SELECT workflows.create('talker', '{}', 'talk-2');
SELECT workflows.wait('talk-2', '60 s')->>'status';},
	qr/"id": "talk-2", "seq": 2/);
like($heard,
	qr/payload "\{"id": "talk-2", "seq": 1, "key": "quiet", "status": "complete"\}"/,
	'with workflows.notify_steps, every step that ends is announced');
is( $node->safe_psql('postgres',
		"SELECT string_agg(seq || ':' || kind || ':' || key, ',' ORDER BY seq) FROM workflows.progress('talk-2')"),
	'1:step:quiet,2:event:stage',
	'progress() reads the stream the announcements point to');

# 7. the example: an order that calls a payment and maps shipments, with a
# refund as the payment's rollback
my $example = ($ENV{TESTDIR} // '.') . '/examples/order_saga.sql';
$example = 'examples/order_saga.sql' unless -f $example;
$node->safe_psql('postgres', 'CREATE DATABASE shop');
my ($rc, $out, $err) = $node->psql('shop', undef,
	extra_params => [ '-f', $example ], on_error_stop => 1);
is($rc, 0, 'examples/order_saga.sql runs') or diag($err);
is( $node->safe_psql(
		'shop', q{
SELECT string_agg(i.status || ':' || (p.refunded IS NOT NULL), ',' ORDER BY i.status)
  FROM workflows.instances i JOIN payments p ON p.instance = i.id || '/pay'
 WHERE i.workflow = 'order'
}),
	'complete:false,errored:true',
	'order_saga: the shipped order keeps its payment, the failed one is refunded');
is($node->safe_psql('shop', "SELECT count(*) FROM shipments"),
	'5', 'order_saga: every item that could be shipped was shipped once');

$node->stop;
done_testing();
