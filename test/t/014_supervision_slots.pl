# 014_supervision_slots.pl
#
# Executor slots go only to databases that have the extension, and are
# never shared.
#
# (a) workflows.max_databases = 1 and several databases without the
#     extension: after a restart, the one database with the extension gets
#     its executor (the launcher used to fill its table with whatever
#     databases it scanned first, and the database with the extension got
#     none).  A copy of it (CREATE DATABASE ... TEMPLATE) has the extension
#     but finds the table full: executor_status() says so; when DROP
#     EXTENSION frees the entry, the copy gets it.  CREATE EXTENSION in a
#     database the full table cannot serve warns (53400); the launcher's
#     log line about the stranded copy is not repeated at every pass.
# (b) An orphan executor of an earlier launcher that exits late must not
#     clear its successor's slot: the executor is stopped (SIGSTOP), the
#     launcher is terminated; its successor waits for the orphan, gives up,
#     starts a new executor in the same slot; then the orphan is let go and
#     exits.  The new executor must still be woken at commit (with a poll
#     interval of a minute, a lost wake-up shows) and still be listed in
#     workflows.executors.  While no launcher runs, CREATE EXTENSION warns
#     (55000).  The orphan had run a step, so it had a crash file: its exit
#     must not remove its successor's (files were named after the slot
#     alone, and the successor's next crash went unaccounted): the
#     successor, killed (SIGKILL) during a step, has the attempt recorded as
#     interrupted (WF008).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('slots');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 1
workflows.max_databases = 1
max_worker_processes = 12
workflows.poll_interval = '60s'
restart_after_crash = on
});
$node->start;

sub executors_in
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = '$db'"
	);
}

sub wait_executors
{
	my ($db, $n) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = '$db'",
		$n);
}

# run an instance and return how long it took to complete, or undef
sub timed_instance
{
	my ($db, $id, $secs) = @_;
	my $t0 = time;
	my $st = $node->safe_psql($db,
		"SELECT workflows.create('hello', '{}', '$id'); SELECT workflows.wait('$id', '$secs s')->>'status'");
	return (split /\n/, $st)[-1] eq 'complete' ? time - $t0 : undef;
}

# ---------------------------------------------------------------------------
# (a) max_databases = 1
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', "CREATE DATABASE $_") for qw(aaa bbb zapp);
$node->safe_psql(
	'zapp', q{
CREATE EXTENSION workflows;
CREATE FUNCTION hello(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('hi', 'SELECT current_database()');
END
$$;
SELECT workflows.register('hello', 'hello(jsonb)');
CREATE FUNCTION nap(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('nap', 'SELECT pg_sleep(($1::text)::float8)',
                          jsonb_build_array(event->'payload'->>'secs'));
END
$$;
SELECT workflows.register('nap', 'nap(jsonb)');
});
$node->restart;
ok(wait_executors('zapp', 1), 'after a restart, the database with the extension has its executor');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'"),
	'1', 'and no other database holds one');
ok(defined timed_instance('zapp', 'z1', 30), 'an instance completes in zapp');

# the table is full: CREATE EXTENSION elsewhere warns, with its SQLSTATE
my ($ret, $stdout, $stderr) =
  $node->psql('aaa', "\\set VERBOSITY verbose\nCREATE EXTENSION workflows");
is($ret, 0, 'CREATE EXTENSION succeeds in aaa while the table is full');
like($stderr,
	qr/WARNING:  53400: workflows cannot start executors for database "aaa"/,
	'and warns with 53400 (workflows.max_databases)');
$node->safe_psql('aaa', 'DROP EXTENSION workflows');

$node->safe_psql('postgres', 'CREATE DATABASE zcopy TEMPLATE zapp');
ok(wait_executors('zapp', 1), 'zapp has its executor back after the copy');
$node->poll_query_until('zcopy',
	"SELECT problem FROM workflows.executor_status() WHERE datname = 'zcopy'",
	'workflows.max_databases (1) databases are already served')
  or diag $node->safe_psql('zcopy', 'SELECT * FROM workflows.executor_status()');
pass('executor_status() in the copy: the table is full');
is(executors_in('zcopy'), '0', 'no executor in the copy');
# the launcher looks at the stranded copy at every pass (any wake-up: here
# five launch requests, a second apart): its log line is not repeated
sleep 1;
for (1 .. 5)
{
	$node->safe_psql('zapp', 'SELECT workflows._launch()');
	sleep 1;
}
my $stranded_lines = () =
  slurp_file($node->logfile) =~ /workflows cannot serve database "zcopy" yet/g;
is($stranded_lines, 1, 'the log says once (not at every pass) that zcopy cannot be served');
$node->safe_psql('zcopy', "SELECT workflows.create('hello', '{}', 'queued-in-copy')");

$node->safe_psql('zapp', 'DROP EXTENSION workflows CASCADE');
ok(wait_executors('zcopy', 1), 'DROP EXTENSION in zapp: the copy gets the freed entry');
is( $node->safe_psql('zcopy', "SELECT workflows.wait('queued-in-copy', '30 s')->>'status'"),
	'complete', 'the instance queued in the copy completes');

# ---------------------------------------------------------------------------
# (b) an orphan executor exits after its successor took the slot
# ---------------------------------------------------------------------------
my $orphan = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'zcopy'");
my $launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows launcher'");
ok(kill('STOP', $orphan), "executor $orphan stopped");
my $ok = eval {
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)");
	$node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows launcher'", '0')
	  or die "the launcher did not exit\n";
	# no launcher (it is restarted after 5 s): CREATE EXTENSION says so
	($ret, $stdout, $stderr) =
	  $node->psql('bbb', "\\set VERBOSITY verbose\nCREATE EXTENSION workflows");
	$node->safe_psql('bbb', 'DROP EXTENSION workflows');
	# restarted after 5 s; waits up to 10 s for the orphan, then starts anew
	$node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'zcopy' AND pid <> $orphan",
		'1')
	  or die "no new executor in zcopy\n";
	# the successor runs a step (and so writes its crash file) before the
	# orphan goes
	timed_instance('zcopy', 'before-orphan-exit', 20) // die "no instance ran in zcopy\n";
	1;
};
my $err = $@;
kill('CONT', $orphan);
like($stderr, qr/WARNING:  55000: the workflows launcher is not running/,
	'CREATE EXTENSION while no launcher runs warns with 55000');
ok($ok, 'a new launcher started a new executor beside the stopped orphan, which ran an instance')
  or diag $err;
$node->poll_query_until('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $orphan", '0')
  or die 'the orphan did not exit';
pass('the orphan exited once let go');

my $new = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'zcopy'");
is($node->safe_psql('zcopy', 'SELECT pid FROM workflows.executors'),
	$new, 'workflows.executors still lists the new executor');
my $zcopy_oid = $node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'zcopy'");
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_ls_dir('pg_workflows') f WHERE f ~ '^executor_${zcopy_oid}_0'"),
	'1', "the orphan's exit left its successor's crash file in place");
my $took = timed_instance('zcopy', 'after-orphan', 20);
ok(defined $took && $took < 10,
	sprintf('the new executor is woken at commit (%.1f s, poll interval 60 s)', $took // -1));

# the successor dies during a step: the attempt is accounted as a crash
$node->safe_psql('zcopy', q{SELECT workflows.create('nap', '{"secs": 4}', 'killed-step')});
$node->poll_query_until('zcopy',
	"SELECT count(*) FROM workflows.executors WHERE instance = 'killed-step' AND step IS NOT NULL", '1')
  or die 'the step did not start';
ok(kill('KILL', $new), "the new executor $new killed during a step");
$node->poll_query_until('zcopy',
	"SELECT status FROM workflows.instances WHERE id = 'killed-step'", 'complete')
  or diag $node->safe_psql('zcopy', "SELECT * FROM workflows.describe('killed-step')");
is( $node->safe_psql('zcopy',
		"SELECT string_agg(coalesce(error->>'sqlstate', 'ok'), ',' ORDER BY attempt) FROM workflows.attempts WHERE instance_id = 'killed-step'"),
	'WF008,ok', 'the killed attempt was recorded as interrupted (WF008), then the step ran again');

$node->stop;
note sprintf('014_supervision_slots took %.1f s', time - $started);
done_testing();
