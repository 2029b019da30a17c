# 010_pg_cron.pl
#
# Cron schedules through pg_cron, in a server that preloads it
# (cron.database_name = 'postgres'): workflows.schedule() makes a pg_cron
# job, the job's command starts an instance with a cron trigger, and
# workflows.unschedule() removes the job.
#
# Debian's pg_cron (1.4) runs jobs at most once a minute, so the test does
# not wait for a tick: it runs the job's command itself, as pg_cron would
# (as the job's role, in the job's database).  The server is set up so that
# pg_cron's own runs work too (cron.host is the socket directory): a tick
# during the test is harmless, and WORKFLOWS_TEST_CRON_TICK=1 makes the test
# wait for a real run (the next minute) and check what it did.
#
# Without pg_cron, schedule() must explain how to install it: in a second
# database of the same server (pg_cron preloaded, but created in 'postgres'
# only), and in a second server that does not preload pg_cron at all.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('pg_cron');
$node->init;
my $socket_dir = $node->host;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'workflows,pg_cron'
cron.database_name = 'postgres'
cron.host = '$socket_dir'
workflows.max_workers = 2
max_worker_processes = 16
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');

$node->safe_psql(
	'postgres', q{
CREATE TABLE ticks (instance text PRIMARY KEY, params jsonb, at timestamptz DEFAULT now());
CREATE FUNCTION cron_tick(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('record',
        'INSERT INTO public.ticks (instance, params) VALUES ($1, $2) RETURNING to_jsonb(instance)',
        jsonb_build_array(event->>'instanceId', event->'payload'));
END
$$;
SELECT workflows.register('cron-tick', 'cron_tick(jsonb)');
});

# --- schedule: a pg_cron job ------------------------------------------------

my $jobid = $node->safe_psql('postgres',
	q{SELECT workflows.schedule('every-minute', '* * * * *', 'cron-tick', '{"from": "tap"}')});
like($jobid, qr/^\d+$/, 'schedule() returns the pg_cron job id');

is( $node->safe_psql(
		'postgres', q{
SELECT jobid, schedule, database, username = current_user, active
  FROM cron.job WHERE jobname = 'workflows:every-minute'
}),
	"$jobid|* * * * *|postgres|t|t",
	'cron.job has the schedule: every minute, in database postgres, as the scheduling role');

like(
	$node->safe_psql('postgres',
		q{SELECT command FROM cron.job WHERE jobname = 'workflows:every-minute'}),
	qr/^SELECT workflows\._scheduled\(\$wf\$\{.*"workflow": "cron-tick".*\}\$wf\$\)$/,
	'the job command calls workflows._scheduled() with the schedule as JSON');

is( $node->safe_psql(
		'postgres', q{
SELECT schedule_name, cron, workflow, params, overlap, jobid, database
  FROM workflows.schedules
}),
	qq{every-minute|* * * * *|cron-tick|{"from": "tap"}|allow|$jobid|postgres},
	'workflows.schedules shows it');

# --- the job's command, run as pg_cron runs it --------------------------------

my $command = $node->safe_psql('postgres',
	q{SELECT command FROM cron.job WHERE jobname = 'workflows:every-minute'});
my $id = $node->safe_psql('postgres', $command);
like($id, qr/^[0-9a-f-]{36}$/, 'the job command creates an instance');

my $doc = decode_json($node->safe_psql('postgres',
	"SELECT workflows.wait('$id', '30 seconds')"));
is($doc->{status}, 'complete', 'the instance completes');
is_deeply(
	$doc->{trigger},
	{ source => 'cron', schedule => 'every-minute' },
	'its trigger says cron, and which schedule');
is_deeply($doc->{params}, { from => 'tap' }, 'it got the schedule\'s params');
is($node->safe_psql('postgres', "SELECT params FROM ticks WHERE instance = '$id'"),
	'{"from": "tap"}', 'its step ran');
is( $node->safe_psql(
		'postgres',
		q{SELECT last_instance IS NOT NULL FROM workflows.schedules WHERE schedule_name = 'every-minute'}
	),
	't',
	'workflows.schedules names the last instance it started');

# --- optionally: a real tick of pg_cron ------------------------------------------

SKIP:
{
	skip 'set WORKFLOWS_TEST_CRON_TICK=1 to wait for a real pg_cron run (up to a minute)', 3
	  unless $ENV{WORKFLOWS_TEST_CRON_TICK};

	ok( $node->poll_query_until(
			'postgres', qq{
SELECT EXISTS (SELECT 1 FROM cron.job_run_details WHERE jobid = $jobid AND status = 'succeeded')
}, 't'),
		'pg_cron ran the job by itself');
	my $by_cron = $node->safe_psql(
		'postgres', qq{
SELECT id FROM workflows.instances
 WHERE trigger->>'schedule' = 'every-minute' AND id <> '$id'
 ORDER BY created_at LIMIT 1
});
	isnt($by_cron, '', 'pg_cron\'s run created an instance');
	is( $node->safe_psql(
			'postgres', "SELECT workflows.wait('$by_cron', '30 seconds')->>'status'"),
		'complete',
		'which completes');
}

# --- unschedule -------------------------------------------------------------------

$node->safe_psql('postgres', q{SELECT workflows.unschedule('every-minute')});
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'workflows:%'}),
	'0', 'unschedule() removed the pg_cron job');
is($node->safe_psql('postgres', 'SELECT count(*) FROM workflows.schedules'),
	'0', 'workflows.schedules is empty');
is($node->safe_psql('postgres', "SELECT status FROM workflows.instances WHERE id = '$id'"),
	'complete', 'the instances it started stay');

my ($ret, $stdout, $stderr) = $node->psql('postgres',
	q{SELECT workflows.unschedule('every-minute')});
isnt($ret, 0, 'unscheduling it again fails');
like($stderr, qr/schedule "every-minute" does not exist/, '... saying it does not exist');

# --- a database without pg_cron ---------------------------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION workflows');
$node->safe_psql(
	'other', q{
CREATE FUNCTION noop(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '1'::jsonb $$;
SELECT workflows.register('noop', 'noop(jsonb)');
});

($ret, $stdout, $stderr) = $node->psql('other',
	"\\set VERBOSITY verbose\nSELECT workflows.schedule('nightly', '0 3 * * *', 'noop')");
isnt($ret, 0, 'schedule() fails in a database without pg_cron');
like($stderr, qr/ERROR:  0A000: pg_cron is not installed in database "other"/,
	'... with feature_not_supported, naming the database');
like(
	$stderr,
	qr/HINT:  pg_cron runs its jobs in database "postgres" \(cron\.database_name\): schedule workflows there, or set cron\.database_name = 'other' in postgresql\.conf, restart the server, then run CREATE EXTENSION pg_cron in database "other"\./,
	'... and a hint: where pg_cron runs, or how to move it here');

($ret, $stdout, $stderr) = $node->psql('other', q{SELECT workflows.unschedule('nightly')});
like($stderr, qr/pg_cron is not installed in database "other"/,
	'unschedule() fails the same way');
is($node->safe_psql('other', 'SELECT count(*) FROM workflows.schedules'),
	'0', 'workflows.schedules is empty there, without an error');

$node->stop;

# --- a server without pg_cron -----------------------------------------------------

my $plain = PostgreSQL::Test::Cluster->new('no_pg_cron');
$plain->init;
$plain->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 1
max_worker_processes = 16
});
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION workflows');
$plain->safe_psql(
	'postgres', q{
CREATE FUNCTION noop(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '1'::jsonb $$;
SELECT workflows.register('noop', 'noop(jsonb)');
CREATE ROLE plain_user;
});

my $install_hint =
  qr/HINT:  Install pg_cron: add pg_cron to shared_preload_libraries and set cron\.database_name = 'postgres' in postgresql\.conf, restart the server, then run CREATE EXTENSION pg_cron in database "postgres"\./;
($ret, $stdout, $stderr) = $plain->psql('postgres',
	q{SELECT workflows.schedule('nightly', '0 3 * * *', 'noop')});
isnt($ret, 0, 'schedule() fails in a server without pg_cron');
like($stderr, qr/ERROR:  pg_cron is not installed in database "postgres"/, '... saying so');
like($stderr, $install_hint, '... with the installation steps as hint');

# roles that may not read shared_preload_libraries get the same steps
($ret, $stdout, $stderr) = $plain->psql('postgres',
	"SET ROLE plain_user;\nSELECT workflows.schedule('nightly', '0 3 * * *', 'noop')");
like($stderr, $install_hint, 'an ordinary role gets the installation steps too');
is($plain->safe_psql('postgres', 'SELECT count(*) FROM workflows.schedules'),
	'0', 'workflows.schedules is empty, without an error');

$plain->stop;
note sprintf('010_pg_cron took %.1f s', time - $started);
done_testing();
