# 004_drop_create.pl
#
# Executors follow the extension: CREATE EXTENSION in a database created
# after the server started brings executors there without a restart; DROP
# EXTENSION makes them exit; CREATE EXTENSION again brings them back.  A
# database without the extension keeps no executor, not even after a server
# restart, when the launcher looks at every database.  And a DROP and a
# CREATE EXTENSION that the launcher sees in one go (it is paused with
# SIGSTOP to make that certain) must leave the database with its executors.
# Finally, the launch queue overflows: with the launcher stopped, more
# requests than its 64 entries are made before CREATE EXTENSION in another
# database; the overflow must make the launcher look at every database, so
# that the database is served at once, not at the next rescan a minute
# later.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('drop_create');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
workflows.poll_interval = '1s'
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');

# executors per database, as "db:count" sorted, for the databases given
sub executors
{
	return $node->safe_psql(
		'postgres', q{
SELECT coalesce(string_agg(d.datname || ':' || n, ',' ORDER BY d.datname), '')
  FROM (SELECT datid, count(*) AS n FROM pg_stat_activity
         WHERE backend_type = 'workflows executor' GROUP BY datid) e
  JOIN pg_database d ON d.oid = e.datid
});
}

sub executors_in
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = '$db'"
	);
}

# poll until the query gives the expected result, at most $secs seconds;
# returns the seconds it took, or undef
sub wait_for
{
	my ($db, $query, $expected, $secs) = @_;
	my $t0 = time;
	while (time - $t0 < $secs)
	{
		my ($stdout, $stderr);
		$node->psql($db, $query, stdout => \$stdout, stderr => \$stderr);
		return time - $t0 if defined $stdout && $stdout eq $expected;
		select(undef, undef, undef, 0.1);
	}
	return undef;
}

# a workflow that writes a row, in database $db
sub setup_workflow
{
	my ($db) = @_;
	$node->safe_psql(
		$db, q{
CREATE TABLE IF NOT EXISTS effects (instance text NOT NULL, db text NOT NULL);
CREATE OR REPLACE FUNCTION writer(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('write',
        'INSERT INTO public.effects VALUES ($1::text, current_database()) RETURNING current_database()',
        jsonb_build_array(event->>'instanceId'));
END
$$;
SELECT workflows.register('writer', 'writer(jsonb)');
});
}

# run one instance in $db and check it completed there, once
sub run_instance
{
	my ($db, $id) = @_;
	my $status = $node->safe_psql($db,
		"SELECT workflows.create('writer', '{}', '$id'); SELECT workflows.wait('$id', '60 s')->>'status'"
	);
	is((split /\n/, $status)[-1], 'complete', "$db: instance $id complete");
	is( $node->safe_psql($db,
			"SELECT output FROM workflows.instances WHERE id = '$id'"),
		"\"$db\"",
		"$db: instance $id ran in $db");
	is($node->safe_psql($db, "SELECT count(*) FROM effects WHERE instance = '$id'"),
		'1', "$db: instance $id wrote once");
}

ok($node->poll_query_until('postgres', 'SELECT count(*) FROM pg_stat_activity WHERE backend_type = \'workflows executor\'', '2'),
	'two executors in postgres');

# ---- a database created after the start ----
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->safe_psql('postgres', 'CREATE DATABASE plain');
is(executors(), 'postgres:2', 'no executor in the new databases before CREATE EXTENSION');

$node->safe_psql('db2', 'CREATE EXTENSION workflows');
ok(defined wait_for('postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'
}, '2', 60),
	'CREATE EXTENSION in db2 starts two executors there, without a restart');
is(executors(), 'db2:2,postgres:2', 'two executors in each database with the extension');

setup_workflow('db2');
run_instance('db2', 'db2-first');

# ---- DROP EXTENSION ----
$node->safe_psql('db2', 'DROP EXTENSION workflows');
my $took = wait_for('postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'
}, '0', 30);
ok(defined $took, 'DROP EXTENSION: the executors of db2 exit within 30 s');
note sprintf('the executors of db2 exited %.1f s after DROP EXTENSION', $took // -1);
is(executors(), 'postgres:2', 'the executors of postgres are not affected');

# they stay away (they are not restarted like executors that failed): the
# launcher would restart a failed executor within about a second, give it
# three poll intervals
ok(!defined wait_for('postgres', q{
SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'
}, 't', 3),
	'no executor comes back to db2 after DROP EXTENSION');

# ---- CREATE EXTENSION again ----
$node->safe_psql('db2', 'CREATE EXTENSION workflows');
ok(defined wait_for('postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'
}, '2', 60),
	'CREATE EXTENSION again starts two executors in db2');
setup_workflow('db2');
run_instance('db2', 'db2-second');
setup_workflow('postgres');
run_instance('postgres', 'postgres-1');

# ---- a restart: the launcher probes every database ----
# debug1 makes the probes say when they find no extension
$node->append_conf('postgresql.conf', 'log_min_messages = debug1');
my $log_offset = -s $node->logfile;
$node->restart;

ok(defined wait_for('postgres', q{
SELECT count(*) FILTER (WHERE datname = 'postgres') || '/' || count(*) FILTER (WHERE datname = 'db2')
  FROM pg_stat_activity WHERE backend_type = 'workflows executor'
}, '2/2', 60),
	'after a restart: two executors in postgres and in db2');

# the probe of "plain" (the only database without the extension) came and went
$node->wait_for_log(
	qr/workflows probe: extension not present in this database/,
	$log_offset);
ok(1, 'after a restart: a probe found no extension in "plain"');
is(executors_in('plain'), '0', 'no executor stays in "plain"');
is(executors(), 'db2:2,postgres:2', 'executors only where the extension is');

run_instance('db2', 'db2-third');

# ---- DROP and CREATE EXTENSION seen by the launcher at once ----
# When the launcher is slow to react (busy, or not scheduled), it can see the
# exits of the executors that found the extension dropped together with the
# request to probe the database again that CREATE EXTENSION made.  Pause the
# launcher with SIGSTOP to make that happen every time.  The database must
# end up with its two executors all the same.
my $launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows launcher'");
like($launcher, qr/^\d+$/, "launcher pid $launcher");
ok(kill('STOP', $launcher), 'launcher paused');
my $paused_ok = eval {
	$node->safe_psql('db2', 'DROP EXTENSION workflows');
	# the executors exit on their own, the postmaster reaps them
	defined wait_for('postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'
}, '0', 30)
	  or die "the executors of db2 did not exit after DROP EXTENSION\n";
	$node->safe_psql('db2', 'CREATE EXTENSION workflows');
	1;
};
my $paused_err = $@;
# never leave the launcher stopped: the server could not shut down
kill('CONT', $launcher);
ok($paused_ok, 'DROP EXTENSION, executors gone, CREATE EXTENSION, all while the launcher was paused')
  or diag $paused_err;

my $two = defined wait_for('postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'
}, '2', 30);
note 'executors in db2 after the paused DROP/CREATE: ' . executors_in('db2');
ok($two, 'DROP + CREATE EXTENSION seen at once by the launcher: two executors in db2 again');

# whatever runs in db2 now: terminate it, the launcher must bring back two
# (new processes: the terminated ones may still be listed for a moment)
my $old_pids = $node->safe_psql('postgres',
	"SELECT COALESCE(string_agg(pid::text, ','), '0') FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'"
);
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'"
);
my $back = defined wait_for('postgres', qq{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'
   AND pid NOT IN ($old_pids)
}, '2', 30);
note 'executors in db2 8 s after terminating them: ' . executors_in('db2');
ok($back, 'after the paused DROP/CREATE, terminated executors of db2 come back');

setup_workflow('db2');
my $st = $node->safe_psql('db2',
	"SELECT workflows.create('writer', '{}', 'db2-fourth'); SELECT workflows.wait('db2-fourth', '30 s')->>'status'"
);
is((split /\n/, $st)[-1], 'complete', 'db2: an instance created afterwards completes');

# ---------------------------------------------------------------------------
# the launch queue overflows: no request is lost
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE late');
# the launcher has looked at late (no extension) before it is stopped
sleep 2;
$launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows launcher'");
ok(kill('STOP', $launcher), "launcher $launcher stopped");
my ($overflow_ok, $overflow_err);
$overflow_ok = eval {
	# 70 requests (each commit of _launch() asks the launcher to look at the
	# database again), more than the queue's 64 entries
	$node->safe_psql('postgres',
		join('', map { "SELECT workflows._launch();\n" } 1 .. 70));
	# this request does not fit in the queue any more
	$node->safe_psql('late', 'CREATE EXTENSION workflows');
	1;
};
$overflow_err = $@;
kill('CONT', $launcher);
ok($overflow_ok, 'more than 64 launch requests, then CREATE EXTENSION in late, while the launcher was stopped')
  or diag $overflow_err;
my $late = wait_for('postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'late'
}, '2', 20);
ok(defined $late,
	sprintf('the overflow made the launcher look at every database: late has its executors (%.1f s)',
		$late // -1));

$node->stop;
note sprintf('004_drop_create took %.1f s', time - $started);
done_testing();
