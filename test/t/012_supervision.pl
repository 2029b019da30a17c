# 012_supervision.pl
#
# Database-level DBA commands and the executors that stay connected to the
# database they serve:
#
# (a) DROP DATABASE by a role that does not own the database fails with
#     PostgreSQL's "must be owner" and leaves the executors alone: same
#     pids, and a step running meanwhile completes in its first attempt.
#     The same for ALTER DATABASE RENAME by a non-owner.
# (b) CREATE DATABASE ... TEMPLATE a database with the extension, ALTER
#     DATABASE ... RENAME and ALTER DATABASE ... SET TABLESPACE succeed
#     (without the executors they fail after five seconds with "being
#     accessed by other users"); the executors come back afterwards, and the
#     copy gets executors of its own and runs instances.  A command that
#     fails after the executors were stopped (ALTER DATABASE ... SET
#     TABLESPACE in a transaction block), and one that is rolled back
#     (RENAME, then ROLLBACK), give them back: new pids, all of them.  An
#     owner's DROP DATABASE that fails after its executors were stopped
#     (in a transaction block) cut a running step short: the attempt is
#     recorded as interrupted by a shutdown (57P01), not charged, and the
#     step runs again at once.
# (c) PREPARE TRANSACTION after workflows.create(), send_event() or a
#     control command is refused (0A000).
# (d) workflows.executor_status() says how many executors run.  On a
#     server without a free worker process, CREATE EXTENSION warns, the
#     status names the problem, and the log names the database, once (not
#     every second).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('supervision');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
max_prepared_transactions = 2
workflows.poll_interval = '1s'
});
$node->start;

sub executor_pids
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = '$db'"
	);
}

sub wait_executors
{
	my ($db, $n) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = '$db'",
		$n);
}

sub setup_workflows
{
	my ($db) = @_;
	$node->safe_psql(
		$db, q{
CREATE EXTENSION workflows;
CREATE FUNCTION nap(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('nap', 'SELECT pg_sleep($1::float8)',
                           jsonb_build_array(coalesce(event->'payload'->>'secs', '0')));
    RETURN to_jsonb(current_database());
END
$$;
SELECT workflows.register('nap', 'nap(jsonb)');
});
}

sub run_instance
{
	my ($db, $id, $label) = @_;
	my $out = $node->safe_psql($db,
		"SELECT workflows.create('nap', '{}', '$id'); SELECT workflows.wait('$id', '30 s')->>'status'");
	is((split /\n/, $out)[-1], 'complete', "$label: instance $id completes in $db");
}

$node->safe_psql('postgres', 'CREATE DATABASE app');
setup_workflows('app');
ok(wait_executors('app', 2), 'two executors in app');
run_instance('app', 'first', 'start');

# ---------------------------------------------------------------------------
# (a) a non-owner's failing DROP DATABASE / RENAME leaves the executors alone
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN CREATEDB');
my $pids = executor_pids('app');
$node->safe_psql('app', q{SELECT workflows.create('nap', '{"secs": 3}', 'long')});
$node->poll_query_until('app',
	"SELECT count(*) FROM workflows.executors WHERE instance = 'long' AND step IS NOT NULL", '1')
  or die 'the long step did not start';

my ($ret, $stdout, $stderr) =
  $node->psql('postgres', 'DROP DATABASE app', extra_params => [ '-U', 'mallory' ]);
isnt($ret, 0, 'a non-owner cannot drop app');
like($stderr, qr/must be owner of database app/, 'PostgreSQL says why');
($ret, $stdout, $stderr) = $node->psql('postgres', 'ALTER DATABASE app RENAME TO stolen',
	extra_params => [ '-U', 'mallory' ]);
like($stderr, qr/must be owner of database app/, 'a non-owner cannot rename app');
is(executor_pids('app'), $pids, 'the executors of app were not stopped (same pids)');
is( $node->safe_psql('app', "SELECT workflows.wait('long', '30 s')->>'status'"),
	'complete', 'the step running meanwhile completed');
is( $node->safe_psql('app',
		"SELECT count(*) || '/' || bool_and(success) FROM workflows.attempts WHERE instance_id = 'long'"),
	'1/true', 'in its first attempt, not killed');

# ---------------------------------------------------------------------------
# (b) CREATE DATABASE ... TEMPLATE, RENAME, SET TABLESPACE
# ---------------------------------------------------------------------------
my $t0 = time;
($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE DATABASE copy TEMPLATE app');
is($ret, 0, 'CREATE DATABASE copy TEMPLATE app succeeds') or diag $stderr;
note sprintf('CREATE DATABASE took %.1f s', time - $t0);
ok(wait_executors('app', 2), 'the executors of app are back');
ok(wait_executors('copy', 2), 'the copy has two executors of its own');
run_instance('copy', 'in-copy', 'copy');
is( $node->safe_psql('copy', "SELECT output FROM workflows.instances WHERE id = 'in-copy'"),
	'"copy"', 'it ran in the copy');
run_instance('app', 'after-copy', 'template');

($ret, $stdout, $stderr) = $node->psql('postgres', 'ALTER DATABASE app RENAME TO app2');
is($ret, 0, 'ALTER DATABASE app RENAME TO app2 succeeds') or diag $stderr;
ok(wait_executors('app2', 2), 'the executors are back in app2');
run_instance('app2', 'after-rename', 'rename');

my $tsdir = $node->basedir . '/ts';
mkdir $tsdir or die "mkdir $tsdir: $!";
$node->safe_psql('postgres', "CREATE TABLESPACE ts LOCATION '$tsdir'");
($ret, $stdout, $stderr) = $node->psql('postgres', 'ALTER DATABASE app2 SET TABLESPACE ts');
is($ret, 0, 'ALTER DATABASE app2 SET TABLESPACE ts succeeds') or diag $stderr;
is( $node->safe_psql('postgres',
		"SELECT t.spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = 'app2'"),
	'ts', 'app2 is in ts');
ok(wait_executors('app2', 2), 'the executors are back after SET TABLESPACE');
run_instance('app2', 'after-move', 'move');

# a command that fails after the executors were stopped gives them back
# (RENAME to a taken name is not one: it is refused before anything stops)
$pids = executor_pids('app2');
($ret, $stdout, $stderr) = $node->psql('postgres', 'ALTER DATABASE app2 RENAME TO copy');
like($stderr, qr/already exists/, 'RENAME to a taken name fails');
is(executor_pids('app2'), $pids, 'before the executors were stopped (same pids)');
($ret, $stdout, $stderr) =
  $node->psql('postgres', "BEGIN;\nALTER DATABASE app2 SET TABLESPACE pg_default;");
like($stderr, qr/cannot run inside a transaction block/,
	'SET TABLESPACE in a transaction block fails after the executors were stopped');
ok(wait_executors('app2', 2), 'two executors in app2 after it');
my $after_failed = executor_pids('app2');
ok(!grep({ index(",$pids,", ",$_,") >= 0 } split(/,/, $after_failed)),
	"they are new ones: the command had stopped them ($pids, then $after_failed)");
run_instance('app2', 'after-failed-move', 'failed move');
($ret, $stdout, $stderr) =
  $node->psql('postgres', "BEGIN;\nALTER DATABASE app2 RENAME TO app3;\nROLLBACK;");
is($ret, 0, 'RENAME in a transaction that is rolled back') or diag $stderr;
ok(wait_executors('app2', 2), 'two executors in app2 after the rollback');
my $after_rollback = executor_pids('app2');
ok(!grep({ index(",$after_failed,", ",$_,") >= 0 } split(/,/, $after_rollback)),
	"new ones again ($after_failed, then $after_rollback)");
run_instance('app2', 'after-rollback', 'rolled back rename');

# an owner's DROP DATABASE that fails after the executors were stopped,
# while a step runs: an orderly stop, not a crash
$node->safe_psql('app2', q{SELECT workflows.create('nap', '{"secs": 4}', 'cut-short')});
$node->poll_query_until('app2',
	"SELECT count(*) FROM workflows.executors WHERE instance = 'cut-short' AND step IS NOT NULL", '1')
  or die 'the step did not start';
($ret, $stdout, $stderr) = $node->psql('postgres', "BEGIN;\nDROP DATABASE app2;");
like($stderr, qr/DROP DATABASE cannot run inside a transaction block/,
	"the owner's DROP DATABASE fails after the executors were stopped");
ok(wait_executors('app2', 2), 'the executors of app2 are back');
is( $node->safe_psql('app2', "SELECT workflows.wait('cut-short', '30 s')->>'status'"),
	'complete', 'the instance whose step was cut short completes');
is( $node->safe_psql('app2',
		"SELECT string_agg(coalesce(error->>'sqlstate', 'ok'), ',' ORDER BY attempt) FROM workflows.attempts WHERE instance_id = 'cut-short'"),
	'57P01,ok', 'the interrupted attempt is recorded as a shutdown (57P01), then the step ran again');
is( $node->safe_psql('app2',
		"SELECT interrupted || '/' || status FROM workflows.steps WHERE instance_id = 'cut-short'"),
	'1/complete', 'counted as interrupted, not toward quarantine (no WF008)');

# and the owner can drop it: the executors leave, nothing comes back
($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE copy');
is($ret, 0, 'DROP DATABASE copy succeeds') or diag $stderr;
ok(wait_executors('copy', 0), 'no executor for the dropped database');

# ---------------------------------------------------------------------------
# (c) PREPARE TRANSACTION
# ---------------------------------------------------------------------------
($ret, $stdout, $stderr) = $node->psql('app2',
	"\\set VERBOSITY verbose\nBEGIN; SELECT workflows.create('nap', '{}', 'prepared'); PREPARE TRANSACTION 'p1';");
like($stderr, qr/ERROR:  0A000: cannot PREPARE a transaction that created/,
	'PREPARE TRANSACTION after create() is refused with 0A000');
is($node->safe_psql('app2', "SELECT count(*) FROM workflows.instances WHERE id = 'prepared'"),
	'0', 'and the instance was not created');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0',
	'nothing was prepared');
$node->safe_psql(
	'app2', q{
CREATE FUNCTION listen(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.wait_for_event('go', 'go', '1 hour');
END
$$;
SELECT workflows.register('listen', 'listen(jsonb)');
SELECT workflows.create('listen', '{}', 'listener');
});
$node->poll_query_until('app2', "SELECT status FROM workflows.instances WHERE id = 'listener'",
	'waiting')
  or die 'the listener does not wait';
($ret, $stdout, $stderr) = $node->psql('app2',
	"\\set VERBOSITY verbose\nBEGIN; SELECT workflows.send_event('listener', 'go'); PREPARE TRANSACTION 'p2';");
like($stderr, qr/ERROR:  0A000: cannot PREPARE a transaction that created, resumed or signalled/,
	'PREPARE TRANSACTION after send_event() is refused with 0A000');
is($node->safe_psql('app2', "SELECT count(*) FROM workflows.events WHERE instance_id = 'listener'"),
	'0', 'and the event was not sent');
($ret, $stdout, $stderr) = $node->psql('app2',
	"\\set VERBOSITY verbose\nBEGIN; SELECT workflows.pause('listener'); PREPARE TRANSACTION 'p3';");
like($stderr, qr/ERROR:  0A000: cannot PREPARE a transaction that created, resumed or signalled/,
	'PREPARE TRANSACTION after a control command (pause) is refused with 0A000');
is($node->safe_psql('app2', "SELECT status FROM workflows.instances WHERE id = 'listener'"),
	'waiting', 'and the instance was not paused');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0',
	'nothing was prepared');
$node->safe_psql('app2', "SELECT workflows.terminate('listener')");

# ---------------------------------------------------------------------------
# (d) executor_status(); no free worker process
# ---------------------------------------------------------------------------
is( $node->safe_psql('app2',
		"SELECT configured || '/' || running || '/' || coalesce(problem, '-') FROM workflows.executor_status() WHERE datname = 'app2'"),
	'2/2/-', 'executor_status(): two of two run in app2');
$node->stop;

my $tight = PostgreSQL::Test::Cluster->new('tight');
$tight->init;
$tight->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 2
});
$tight->start;
$tight->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('workflows launcher', 'logical replication launcher')",
	'2')
  or die 'the launchers did not start';
my $log_offset = -s $tight->logfile;
($ret, $stdout, $stderr) = $tight->psql('postgres', 'CREATE EXTENSION workflows');
is($ret, 0, 'CREATE EXTENSION succeeds without a free worker process');
like($stderr, qr/WARNING:  workflows cannot start executors for database "postgres"/,
	'CREATE EXTENSION warns that no executor can start');
like($stderr, qr/HINT:  Raise max_worker_processes/, 'with a hint');
$tight->poll_query_until('postgres',
	"SELECT problem ~ 'max_worker_processes' AND running = 0 AND failed_starts > 0 FROM workflows.executor_status() WHERE datname = 'postgres'",
	't')
  or diag $tight->safe_psql('postgres', 'SELECT * FROM workflows.executor_status()');
pass('executor_status() names the problem: no worker process');
sleep 3;
# the probe that would look for the extension could not start either, since
# the server started: one line, naming the database, not one a second
my $lines = () = slurp_file($tight->logfile) =~
  /workflows could not start (?:a probe|an executor) for database "postgres"/g;
is($lines, 1, 'the log names the database, once in over three seconds');
my $failed = $tight->safe_psql('postgres',
	"SELECT failed_starts FROM workflows.executor_status() WHERE datname = 'postgres'");
ok($failed >= 2, "the launcher keeps trying ($failed failed starts)");
$tight->stop;

note sprintf('012_supervision took %.1f s', time - $started);
done_testing();
