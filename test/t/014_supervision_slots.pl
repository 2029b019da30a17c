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
#     EXTENSION frees the entry, the copy gets it.
# (b) An orphan executor of an earlier launcher that exits late must not
#     clear its successor's slot: the executor is stopped (SIGSTOP), the
#     launcher is terminated; its successor waits for the orphan, gives up,
#     starts a new executor in the same slot; then the orphan is let go and
#     exits.  The new executor must still be woken at commit (with a poll
#     interval of a minute, a lost wake-up shows) and still be listed in
#     workflows.executors.

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
});
$node->restart;
ok(wait_executors('zapp', 1), 'after a restart, the database with the extension has its executor');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'"),
	'1', 'and no other database holds one');
ok(defined timed_instance('zapp', 'z1', 30), 'an instance completes in zapp');

$node->safe_psql('postgres', 'CREATE DATABASE zcopy TEMPLATE zapp');
ok(wait_executors('zapp', 1), 'zapp has its executor back after the copy');
$node->poll_query_until('zcopy',
	"SELECT problem FROM workflows.executor_status() WHERE datname = 'zcopy'",
	'workflows.max_databases (1) databases are already served')
  or diag $node->safe_psql('zcopy', 'SELECT * FROM workflows.executor_status()');
pass('executor_status() in the copy: the table is full');
is(executors_in('zcopy'), '0', 'no executor in the copy');
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
	# restarted after 5 s; waits up to 10 s for the orphan, then starts anew
	$node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'zcopy' AND pid <> $orphan",
		'1')
	  or die "no new executor in zcopy\n";
	1;
};
my $err = $@;
kill('CONT', $orphan);
ok($ok, 'a new launcher started a new executor beside the stopped orphan') or diag $err;
$node->poll_query_until('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $orphan", '0')
  or die 'the orphan did not exit';
pass('the orphan exited once let go');

my $new = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'zcopy'");
is($node->safe_psql('zcopy', 'SELECT pid FROM workflows.executors'),
	$new, 'workflows.executors still lists the new executor');
my $took = timed_instance('zcopy', 'after-orphan', 20);
ok(defined $took && $took < 10,
	sprintf('the new executor is woken at commit (%.1f s, poll interval 60 s)', $took // -1));

$node->stop;
note sprintf('014_supervision_slots took %.1f s', time - $started);
done_testing();
