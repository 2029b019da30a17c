# 016_engine_errors.pl
#
# No crash loops.  An error outside the step and the workflow function --
# the engine's own bookkeeping failing for one instance -- must not end the
# executor (whose successor would claim the same instance first again,
# forever): the instance is retried a few times, then parked as errored
# with WF009, the executors keep their processes, and every other instance
# keeps running.  The failures are counted per instance, not per
# executor: with the executors restarted after two failures, the third
# parks it (a count kept by each executor started again from zero in the
# new ones, and with N executors allowed up to 3 x N failures).  A workflow whose function was dropped fails with a clear
# error, not "cache lookup failed".  And an executor's memory for step
# outputs is bounded (workflows.memo_cache_size) without changing results.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('engine_errors');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');
$node->safe_psql(
	'postgres', q{
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);
CREATE FUNCTION named(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step(event->'payload'->>'step',
        'INSERT INTO public.effects VALUES ($1::text, $2::text) RETURNING 1',
        jsonb_build_array(event->>'instanceId', event->'payload'->>'step'));
END
$$;
SELECT workflows.register('named', 'named(jsonb)');
});

# both executors up before their pids are taken: "no executor exited" below
# compares with these
$node->poll_query_until('postgres',
	q{SELECT count(*) FROM pg_stat_activity
	  WHERE backend_type = 'workflows executor' AND application_name = 'workflows executor'},
	'2')
  or die 'executors did not start';
my $pids_before = $node->safe_psql('postgres',
	q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
	  WHERE application_name = 'workflows executor'});

# sabotage the bookkeeping for one step key: recording it fails after the
# step ran, outside the step's own subtransaction
$node->safe_psql('postgres',
	q{ALTER TABLE workflows.steps ADD CONSTRAINT sabotage CHECK (key <> 'boom') NOT VALID});
$node->safe_psql(
	'postgres', q{
SELECT workflows.create('named', '{"step": "boom"}', 'boom-1');
SELECT workflows.create('named', jsonb_build_object('step', 'fine'), 'fine-' || i)
  FROM generate_series(1, 20) i;
});

$node->poll_query_until('postgres',
	q{SELECT status = 'errored' FROM workflows.instances WHERE id = 'boom-1'})
  or die 'the failing instance was not parked';
is( $node->safe_psql('postgres',
		q{SELECT error->>'sqlstate' FROM workflows.instances WHERE id = 'boom-1'}),
	'WF009', 'the instance the engine could not advance is parked with WF009');
like(
	$node->safe_psql('postgres',
		q{SELECT error->>'message' FROM workflows.instances WHERE id = 'boom-1'}),
	qr/could not be advanced 3 times: .*sabotage/,
	'its error says why');
$node->poll_query_until('postgres',
	q{SELECT count(*) = 20 FROM workflows.instances WHERE id LIKE 'fine-%' AND status = 'complete'})
  or die 'the other instances did not complete';
pass('every other instance completed');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM effects WHERE instance = 'boom-1'}),
	'0', 'the parked instance left no effect (its step was rolled back with the bookkeeping)');
is( $node->safe_psql('postgres',
		q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
		  WHERE application_name = 'workflows executor'}),
	$pids_before, 'no executor exited');

# fixed: restart() runs it again
$node->safe_psql('postgres', q{ALTER TABLE workflows.steps DROP CONSTRAINT sabotage});
$node->safe_psql('postgres', q{SELECT workflows.restart('boom-1')});
$node->poll_query_until('postgres',
	q{SELECT status = 'complete' FROM workflows.instances WHERE id = 'boom-1'})
  or die 'the restarted instance did not complete';
pass('after the cause is fixed, restart() completes it');

# failures counted per instance: the executors are restarted after every
# failed tick, so that no executor sees more than the failure it made (a
# tick fails about once a second: the instance is put back a second later)
$node->safe_psql('postgres',
	q{ALTER TABLE workflows.steps ADD CONSTRAINT sabotage2 CHECK (key <> 'boom2') NOT VALID});
my $log_offset = -s $node->logfile;
my $failed_ticks = sub {
	my $n = () = slurp_file($node->logfile, $log_offset) =~
	  /could not advance instance "boom-2"/g;
	return $n;
};
$node->safe_psql('postgres',
	q{SELECT workflows.create('named', '{"step": "boom2"}', 'boom-2')});
my ($restarts, $seen, $parked) = (0, 0, 0);
my $t0 = time;
while (!$parked && time - $t0 < 120)
{
	# the count and the status in one snapshot
	my ($failures, $status) = split /\|/, $node->safe_psql('postgres',
		q{SELECT coalesce((SELECT failures FROM workflows.tick_failures WHERE instance_id = 'boom-2'), 0),
		         (SELECT status FROM workflows.instances WHERE id = 'boom-2')});
	if ($status eq 'errored')
	{
		$parked = 1;
	}
	elsif ($failures > $seen)
	{
		$seen = $failures;
		$node->safe_psql('postgres',
			q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'workflows executor'});
		$restarts++;
	}
	else
	{
		sleep 0.05;
	}
}
ok($parked, "boom-2 was parked ($restarts restarts of the executors on the way)");
cmp_ok($restarts, '>=', 1, 'the executors were restarted at least once between failures');
like(
	$node->safe_psql('postgres',
		q{SELECT error->>'sqlstate' || ' ' || (error->>'message') FROM workflows.instances WHERE id = 'boom-2'}),
	qr/^WF009 the instance could not be advanced 3 times: .*sabotage2/,
	'parked with WF009 after three failures in all');
# (a tick that fails lets go of the instance before its failure is counted,
# so another executor may fail it once more meanwhile; with a count per
# executor, restarted executors would never have got to three)
ok($failed_ticks->() <= 4,
	sprintf('parked without the new executors starting a count of their own (%d failed ticks)',
		$failed_ticks->()));
is( $node->safe_psql('postgres',
		q{SELECT failures FROM workflows.tick_failures WHERE instance_id = 'boom-2'}),
	'3', 'workflows.tick_failures counted them');
$node->safe_psql('postgres', q{ALTER TABLE workflows.steps DROP CONSTRAINT sabotage2});

# a dropped workflow function
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION doomed(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.wait_for_event('go', 'go', '1 hour');
    RETURN '1';
END
$$;
SELECT workflows.register('doomed', 'doomed(jsonb)');
SELECT workflows.create('doomed', '{}', 'doomed-1');
});
$node->poll_query_until('postgres',
	q{SELECT status = 'waiting' FROM workflows.instances WHERE id = 'doomed-1'})
  or die 'doomed-1 did not wait';
$node->safe_psql('postgres', q{DROP FUNCTION doomed(jsonb); SELECT workflows.send_event('doomed-1', 'go')});
$node->poll_query_until('postgres',
	q{SELECT status = 'errored' FROM workflows.instances WHERE id = 'doomed-1'})
  or die 'doomed-1 did not end';
is( $node->safe_psql('postgres',
		q{SELECT (error->>'sqlstate') || ' ' || (error->>'message') FROM workflows.instances WHERE id = 'doomed-1'}),
	'WF009 the function of workflow version '
	  . $node->safe_psql('postgres', q{SELECT version_id FROM workflows.instances WHERE id = 'doomed-1'})
	  . ' (OID '
	  . $node->safe_psql('postgres', q{SELECT v.fn::oid FROM workflows.versions v JOIN workflows.instances i USING (version_id) WHERE i.id = 'doomed-1'})
	  . ') was dropped',
	'a dropped workflow function fails its instances with a clear WF009 error');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT workflows.create('doomed', '{}')});
like($err, qr/the function of workflow "doomed" was dropped/,
	'create() refuses a workflow whose function was dropped, saying so');

# bounded memory: with a 1 kB memo cache, most outputs of a long instance
# are not kept by the executor but read back when a replay reaches them;
# the workflow sees every one of them, unchanged
$node->safe_psql('postgres', q{ALTER SYSTEM SET workflows.memo_cache_size = '1kB'; SELECT pg_reload_conf()});
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION long_outputs(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    total bigint := 0;
    out jsonb;
BEGIN
    FOR i IN 1..40 LOOP
        out := workflows.step('s', 'SELECT jsonb_build_object(''i'', $1::int, ''pad'', repeat(''x'', 200))',
                              to_jsonb(i));
        total := total + (out->>'i')::int + length(out->>'pad');
    END LOOP;
    RETURN to_jsonb(total);
END
$$;
SELECT workflows.register('long-outputs', 'long_outputs(jsonb)');
SELECT workflows.create('long-outputs', '{}', 'long-1');
});
$node->poll_query_until('postgres',
	q{SELECT status = 'complete' FROM workflows.instances WHERE id = 'long-1'})
  or die 'long-1 did not complete';
is($node->safe_psql('postgres', q{SELECT output FROM workflows.instances WHERE id = 'long-1'}),
	40 * 41 / 2 + 40 * 200,
	'outputs beyond workflows.memo_cache_size are read back, unchanged, when replay needs them');

$node->stop;
done_testing();
