# 005_poison_step.pl
#
# A step whose callback kills its own executor every time is quarantined
# after workflows.max_step_crashes interrupted attempts: the instance ends
# errored with SQLSTATE WF008 instead of taking the executors down forever,
# every interrupted attempt is recorded, and other instances keep running.
# Also with a real crash (SIGKILL of the executor inside the step, which
# makes the postmaster restart every backend).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('poison');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
workflows.max_step_crashes = 3
max_worker_processes = 16
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION workflows');

$node->safe_psql(
	'postgres', q{
CREATE TABLE effects (instance text, step text);
CREATE FUNCTION poison(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM workflows.step('before', 'INSERT INTO effects VALUES ($1, ''before'')',
                           jsonb_build_array(event->>'instanceId'));
    -- the executor running this step terminates itself: a FATAL exit
    r := workflows.step('suicide', 'SELECT pg_terminate_backend(pg_backend_pid())');
    PERFORM workflows.step('after', 'INSERT INTO effects VALUES ($1, ''after'')',
                           jsonb_build_array(event->>'instanceId'));
    RETURN r;
END
$$;
CREATE FUNCTION healthy(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('ok', 'INSERT INTO effects VALUES ($1, ''ok'') RETURNING ''fine''::text',
                          jsonb_build_array(event->>'instanceId'));
END
$$;
SELECT workflows.register('poison', 'poison(jsonb)');
SELECT workflows.register('healthy', 'healthy(jsonb)');
});

$node->safe_psql('postgres', "SELECT workflows.create('poison', '{}', 'p-1')");

$node->poll_query_until('postgres',
	"SELECT status = 'errored' FROM workflows.instances WHERE id = 'p-1'")
  or die 'the poison instance was never quarantined';

is( $node->safe_psql('postgres',
		"SELECT error->>'sqlstate', error->>'message' FROM workflows.instances WHERE id = 'p-1'"),
	'WF008|step "suicide" was interrupted 3 times by the exit of its executor and is quarantined',
	'the instance errored with WF008, naming the step');
is( $node->safe_psql('postgres',
		"SELECT status, attempts FROM workflows.steps WHERE instance_id = 'p-1' AND key = 'suicide'"),
	'failed|3', 'the step failed for good after 3 attempts');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.attempts WHERE instance_id = 'p-1' AND step_key = 'suicide' AND NOT success AND error->>'sqlstate' = 'WF008'"),
	'3', 'all three interrupted attempts are recorded');
is( $node->safe_psql('postgres',
		"SELECT string_agg(step, ',' ORDER BY step) FROM effects WHERE instance = 'p-1'"),
	'before', 'the step before ran once; the steps after never ran');

# the executors are back and work goes on
$node->safe_psql('postgres', "SELECT workflows.create('healthy', '{}', 'h-1')");
is( $node->safe_psql('postgres', "SELECT workflows.wait('h-1', '60 s')->'output'"),
	'"fine"', 'a healthy instance completes afterwards');
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'workflows executor'")
  or die 'executors did not come back';
pass('both executors are running again');

# a real crash: SIGKILL the executor while it runs a step, three times
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION hangs(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('hang', 'SELECT pg_sleep(60)');
END
$$;
SELECT workflows.register('hangs', 'hangs(jsonb)');
SELECT workflows.create('hangs', '{}', 'k-1');
});
# kill whichever executor runs the step, until the step is quarantined
my $kills = 0;
while ($kills < 10
	&& $node->safe_psql('postgres', "SELECT status FROM workflows.instances WHERE id = 'k-1'") ne 'errored')
{
	my $pid = '';
	for (1 .. 300)
	{
		$pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND query = 'SELECT pg_sleep(60)'");
		last if $pid ne ''
		  || $node->safe_psql('postgres', "SELECT status FROM workflows.instances WHERE id = 'k-1'") eq 'errored';
		select(undef, undef, undef, 0.1);
	}
	last if $pid eq '';
	my $offset = -s $node->logfile;
	kill 'KILL', $pid;
	$kills++;
	# crash recovery: every backend restarts.  Until the postmaster has
	# noticed the kill, pg_stat_activity still lists the killed executor and
	# its sibling, and the next query could meet the restart half-way: wait
	# for the reinitialization, then for two executors other than the killed
	# one.
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	$node->poll_query_until('postgres',
		"SELECT count(*) = 2 AND count(*) FILTER (WHERE pid = $pid) = 0 FROM pg_stat_activity WHERE backend_type = 'workflows executor'")
	  or die "kill $kills: executors did not come back";
}
$node->poll_query_until('postgres',
	"SELECT status = 'errored' FROM workflows.instances WHERE id = 'k-1'")
  or die 'the crashing instance was never quarantined';
note "executors killed: $kills";
ok($kills >= 3, 'the step was quarantined only after at least three crashes');
is( $node->safe_psql('postgres',
		"SELECT error->>'sqlstate', (SELECT count(*) FROM workflows.attempts WHERE instance_id = 'k-1' AND NOT success AND error->>'sqlstate' = 'WF008') FROM workflows.instances WHERE id = 'k-1'"),
	'WF008|3', 'quarantined with WF008 after three recorded interrupted attempts');

$node->stop;
done_testing();
