# 008_exhaustion.pl
#
# Resources used up by others.
#
# (a) Background worker slots: max_worker_processes = 3, of which the
#     logical replication launcher takes one and the workflows launcher
#     another, so only ONE of the two executors can start.  Instances still
#     complete, with the one executor; the launcher logs that it could not
#     start the other, keeps retrying (about once a second, not in a tight
#     loop) and does not crash.
#     (max_logical_replication_workers = 0 does not start the logical
#     replication launcher: then the same 3 slots run both executors.)
#
# (b) All worker slots taken for a while: max_worker_processes = 4 (no
#     logical replication launcher): the launcher and the two executors of
#     database "postgres" leave one slot, which a parallel query of another
#     session holds when CREATE EXTENSION runs in database "db2".  No
#     executor of db2 can start until the parallel query ends; then one
#     does, and db2's instances complete.
#
# (c) Client connection slots: max_connections = 8 with 3 reserved for
#     superusers.  A non-superuser role takes every slot it may have, then
#     superuser sessions take the rest, until no connection at all is
#     accepted.  Executors are background workers and need no client slot:
#     instances created before complete, an executor terminated now is
#     restarted, and new instances complete too.  Then the sessions close.
#
# After each: every acknowledged instance exists and is complete, every
# step's effect is there exactly once with its memo, nothing is left
# running.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WorkflowsInvariant ();
use JSON::PP;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('exhaustion');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 3
log_min_messages = info
});
$node->start;

my %acked;    # "db:id" => [step keys]

is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication launcher'"
	),
	'1',
	'the logical replication launcher takes a worker slot');

my $log_offset = -s $node->logfile;
setup_db($node, 'postgres');

# ---------------------------------------------------------------------------
# (a) room for one executor only
# ---------------------------------------------------------------------------
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
	'1')
  or die 'no executor started';
my $launcher_pid = launcher_pid($node);
like($launcher_pid, qr/^\d+$/, 'the workflows launcher runs');

$node->wait_for_log(qr/workflows could not start an executor for database "postgres"/,
	$log_offset);
pass('the launcher logs that it could not start an executor');
like(
	slurp_file($node->logfile, $log_offset),
	qr/HINT:  Raise max_worker_processes/,
	'with a hint to raise max_worker_processes');

my @a = map { "a-$_" } 1 .. 40;
create_instances($node, 'postgres', \@a, \%acked);

# count the launcher's attempts over a few seconds (workflows.executor_status()
# counts them; the log says it at most once a minute)
my $failed_starts = "SELECT failed_starts FROM workflows.executor_status() WHERE datname = 'postgres'";
# (wait for two more attempts rather than count them over a fixed time: a
# launcher that is not scheduled for a while on a loaded machine retries
# late, not too often; the upper bound is what tells a tight loop)
my $count_from = $node->safe_psql('postgres', $failed_starts);
my $t_from = time;
my $attempts = 0;
while (time - $t_from < 60)
{
	$attempts = $node->safe_psql('postgres', $failed_starts) - $count_from;
	last if $attempts >= 2 && time - $t_from >= 3;
	select(undef, undef, undef, 0.1);
}
my $span = time - $t_from;
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'"),
	'1', 'still exactly one executor');
note sprintf('%d failed attempts to start the executor in %.1f s', $attempts, $span);
ok($attempts >= 2, 'the launcher keeps retrying');
ok($attempts <= $span + 2, 'about once a second, not in a tight loop');

wait_final($node, 'postgres', \%acked, 60) or die 'instances did not finish';
pass('(a) every instance completes with one executor');
check_invariant($node, 'postgres', '(a) one executor', \%acked);
is(launcher_pid($node), $launcher_pid,
	'the launcher kept running (same process) all along');
unlike(
	slurp_file($node->logfile, $log_offset),
	qr/workflows launcher.*(terminated by signal|exited with exit code)/,
	'the launcher never exited');

# without the logical replication launcher, the same three slots are enough
$node->append_conf('postgresql.conf', "max_logical_replication_workers = 0\n");
$node->restart;
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
	'2')
  or die 'two executors did not start';
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication launcher'"
	),
	'0',
	'max_logical_replication_workers = 0: no logical replication launcher, two executors');

# ---------------------------------------------------------------------------
# (b) the last slot held by another session's parallel query
# ---------------------------------------------------------------------------
$node->append_conf('postgresql.conf', "max_worker_processes = 4\n");
$node->restart;
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
	'2')
  or die 'executors did not start';
$node->safe_psql('postgres', 'CREATE DATABASE db2');

my $hog = $node->background_psql('postgres');
$hog->query_safe('SET force_parallel_mode = on');
# the hog sleeps until cancelled below: however slow the machine, the slot
# stays taken until the test lets it go
my $hog_pid = $hog->query_safe('SELECT pg_backend_pid()');
$hog->query_until(qr/hogging/, "\\echo hogging\nSELECT pg_sleep(600);\n");
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parallel worker'",
	'1')
  or die 'the parallel query did not get its worker';
pass('a parallel worker of another session holds the last worker slot');

$log_offset = -s $node->logfile;
my $db2oid = $node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'db2'");
setup_db($node, 'db2');
my @b = map { "b-$_" } 1 .. 20;
create_instances($node, 'db2', \@b, \%acked);

$node->wait_for_log(qr/workflows could not start (?:a probe|an executor) for database "db2"/,
	$log_offset);
pass('the launcher could not start an executor for db2');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'"),
	'0', 'no executor runs in db2 while the slot is taken');
is( $node->safe_psql('db2',
		"SELECT count(*) FROM workflows.instances WHERE status = 'queued'"),
	scalar(@b), 'the instances of db2 wait in the queue');

# the parallel query ends; its slot goes to db2's first executor
$node->safe_psql('postgres', "SELECT pg_cancel_backend($hog_pid)");
# (psql stops at the cancelled query's error: quitting may find it gone)
eval { $hog->quit; };
wait_final($node, 'db2', \%acked, 60) or die 'db2 instances did not finish';
pass('(b) every instance of db2 completes once the slot is free');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'db2'"),
	'1', 'one executor runs in db2 (the second still has no slot)');
check_invariant($node, 'db2', '(b) db2', \%acked);
check_invariant($node, 'postgres', '(b) postgres', \%acked);

# ---------------------------------------------------------------------------
# (c) client connection slots used up
# ---------------------------------------------------------------------------
$node->append_conf(
	'postgresql.conf', q{
max_worker_processes = 16
max_connections = 8
superuser_reserved_connections = 3
});
$node->restart;
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'postgres'",
	'2')
  or die 'executors did not start';
$node->safe_psql('postgres', q{
CREATE ROLE app LOGIN;
GRANT INSERT, SELECT ON effects TO app;
-- (so that app's sessions see every backend's type in pg_stat_activity:
-- settle() below counts through them; it gives no reserved slot)
GRANT pg_read_all_stats TO app;
});

# Instances of app: durable sleepers, which wake while the slots are full,
# and slow steps.
my @c = map { "c-$_" } 1 .. 10;
my @cn = map { "cnap-$_" } 1 .. 5;
my @cw = map { "cwait-$_" } 1 .. 3;    # wait for an event sent once the slots are full
my $sql = "BEGIN;\n";
$sql .= "SELECT workflows.create('three_steps', '{\"sleep\": 0.2}', '$_');\n" for @c;
$sql .= "SELECT workflows.create('napper', '{\"nap\": 4}', '$_');\n" for @cn;
$sql .= "SELECT workflows.create('waiter', '{}', '$_');\n" for @cw;
$sql .= "COMMIT;\n";
app_psql($node, $sql);
$acked{"postgres:$_"} = [qw(s1 s2 s3)] for @c;
$acked{"postgres:$_"} = [qw(before after)] for @cn, @cw;
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.instances WHERE owner = 'app'::regrole"),
	scalar(@c) + scalar(@cn) + scalar(@cw), 'app created its instances');

# A client's backend goes on holding its connection slot for a moment after
# the client has gone (psql does not wait for it to exit): before each
# connection, wait -- through a session already held -- until only the held
# sessions are left, so that the slots counted below are the held ones.
sub settle
{
	my ($held, $n) = @_;
	return unless @$held;
	my $t = time;
	my $got;
	while (time - $t < 60)
	{
		$got = $held->[0]->query_safe(
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'");
		return if $got == $n;
		select(undef, undef, undef, 0.05);
	}
	die "$got client backends, not the $n sessions held";
}

# app takes every connection it may have
my @sessions;
while (@sessions < 10)
{
	settle(\@sessions, scalar(@sessions));
	my ($ret, $out, $err) =
	  $node->psql('postgres', 'SELECT 1', extra_params => [ '-U', 'app' ]);
	if ($ret != 0)
	{
		like(
			$err,
			qr/remaining connection slots are reserved for non-replication superuser connections/,
			'app is refused once the non-reserved slots are taken');
		last;
	}
	settle(\@sessions, scalar(@sessions));
	push @sessions,
	  $node->background_psql('postgres', extra_params => [ '-U', 'app' ]);
}
is(scalar(@sessions), 5, 'app holds 5 connections (8 minus 3 reserved)');

# then superuser sessions take the reserved slots; the last one is ours
my @su;
while (@su < 10)
{
	settle(\@sessions, @sessions + @su);
	my ($ret, $out, $err) = $node->psql('postgres', 'SELECT 1');
	if ($ret != 0)
	{
		like($err, qr/sorry, too many clients already/,
			'no connection at all is accepted any more');
		last;
	}
	settle(\@sessions, @sessions + @su);
	push @su, $node->background_psql('postgres');
}
is(scalar(@su), 3, 'superuser sessions hold the 3 reserved connections');
my $q = $su[-1];    # our only way in now

is( $q->query_safe(
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"),
	'8', 'all 8 client connection slots are in use');

# executors need no client connection: instances created before complete
my $pending = $q->query_safe(
	"SELECT count(*) FROM workflows.instances WHERE status NOT IN ('complete', 'errored', 'terminated')");
note "$pending instances still to finish when the last slot was taken";
ok($pending >= scalar(@cw), 'instances were still running or waiting when the slots ran out');
$q->query_safe("SELECT workflows.send_event('$_', 'go')") for @cw;
my $t = time;
while (time - $t < 60)
{
	$pending = $q->query_safe(
		"SELECT count(*) FROM workflows.instances WHERE status NOT IN ('complete', 'errored', 'terminated')"
	);
	last if $pending eq '0';
	select(undef, undef, undef, 0.25);
}
is($pending, '0',
	'(c) the instances created before complete while no client connection is free');

# an executor terminated now is restarted: it needs no client slot either
my $victim = $q->query_safe(
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'postgres' ORDER BY pid LIMIT 1");
$q->query_safe("SELECT pg_terminate_backend($victim)");
my $restarted = '';
$t = time;
while (time - $t < 30)
{
	$restarted = $q->query_safe(
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'postgres' AND pid <> $victim"
	);
	last if $restarted eq '2';
	select(undef, undef, undef, 0.25);
}
is($restarted, '2', 'a terminated executor is restarted while every client slot is taken');

# and new work is done
$q->query_safe("SELECT workflows.create('three_steps', '{\"sleep\": 0}', 'c-full')");
$acked{'postgres:c-full'} = [qw(s1 s2 s3)];
is( $q->query_safe("SELECT workflows.wait('c-full', '30 seconds')->>'status'"),
	'complete', 'an instance created while every slot is taken completes');

# close the sessions
$_->quit for @sessions, @su;
$node->poll_query_until('postgres',
	"SELECT count(*) <= 1 FROM pg_stat_activity WHERE backend_type = 'client backend'")
  or die 'the sessions did not go away';
my ($ret) = $node->psql('postgres', 'SELECT 1', extra_params => [ '-U', 'app' ]);
is($ret, 0, 'app can connect again once the sessions are closed');

check_invariant($node, 'postgres', '(c) connections used up', \%acked);

unlike(
	slurp_file($node->logfile),
	qr/PANIC|TRAP:|was terminated by signal (4|6|7|8|11)/,
	'no crash in the server log');

$node->stop;
note sprintf('008_exhaustion took %.1f s', time - $started);
done_testing();

# ---------------------------------------------------------------------------

sub setup_db
{
	my ($node, $db) = @_;
	$node->safe_psql(
		$db, q{
CREATE EXTENSION workflows;
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);

-- three steps, each sleeps params.sleep seconds (default 0.02) and writes
-- its effect
CREATE FUNCTION three_steps(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    total int := 0;
BEGIN
    FOR i IN 1 .. 3 LOOP
        total := total + (workflows.step('s' || i,
            'INSERT INTO public.effects SELECT $1::text, $2::text FROM pg_sleep($3::float8) RETURNING 1',
            jsonb_build_array(id, 's' || i, coalesce(event->'payload'->'sleep', '0.02'))))::int;
    END LOOP;
    RETURN jsonb_build_object('total', total);
END
$$;

-- a step, a durable sleep of params.nap seconds, a step
CREATE FUNCTION napper(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
BEGIN
    PERFORM workflows.step('before',
        'INSERT INTO public.effects VALUES ($1::text, ''before'')', jsonb_build_array(id));
    PERFORM workflows.sleep('nap', make_interval(secs => (event->'payload'->>'nap')::float8));
    PERFORM workflows.step('after',
        'INSERT INTO public.effects VALUES ($1::text, ''after'')', jsonb_build_array(id));
    RETURN '"woke"'::jsonb;
END
$$;

-- a step, a wait for event "go", a step
CREATE FUNCTION waiter(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
BEGIN
    PERFORM workflows.step('before',
        'INSERT INTO public.effects VALUES ($1::text, ''before'')', jsonb_build_array(id));
    PERFORM workflows.wait_for_event('go', 'go', '1 hour');
    PERFORM workflows.step('after',
        'INSERT INTO public.effects VALUES ($1::text, ''after'')', jsonb_build_array(id));
    RETURN '"went"'::jsonb;
END
$$;

SELECT workflows.register('three_steps', 'three_steps(jsonb)');
SELECT workflows.register('napper', 'napper(jsonb)');
SELECT workflows.register('waiter', 'waiter(jsonb)');
});
	return;
}

sub create_instances
{
	my ($node, $db, $ids, $acked) = @_;
	my $json = encode_json([ map { { id => $_ } } @$ids ]);
	my $got = $node->safe_psql($db,
		"SELECT string_agg(id, ',') FROM workflows.create_batch('three_steps', '$json') id");
	is($got, join(',', @$ids), "$db: created " . scalar(@$ids) . ' instances');
	$acked->{"$db:$_"} = [qw(s1 s2 s3)] for @$ids;
	return;
}

sub app_psql
{
	my ($node, $sql) = @_;
	my ($ret, $out, $err) =
	  $node->psql('postgres', $sql, extra_params => [ '-U', 'app', '-v', 'ON_ERROR_STOP=1' ]);
	die "psql as app failed: $err" if $ret != 0;
	return $out;
}

sub launcher_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows launcher'");
}

# wait until every acknowledged instance of $db is final
sub wait_final
{
	my ($node, $db, $acked, $timeout) = @_;
	my $n = grep { /^\Q$db\E:/ } keys %$acked;
	my $t = time;
	while (time - $t < $timeout)
	{
		return 1
		  if $node->safe_psql($db,
			"SELECT count(*) FROM workflows.instances WHERE status IN ('complete', 'errored', 'terminated')"
		  ) >= $n;
		select(undef, undef, undef, 0.25);
	}
	diag $node->safe_psql($db, 'SELECT status, count(*) FROM workflows.instances GROUP BY status');
	return 0;
}

# The invariant, for the instances of one database.
sub check_invariant
{
	my ($node, $db, $label, $acked) = @_;

	# %acked holds "db:id" keys for both databases
	my %mine = map { /^\Q$db\E:(.*)$/ ? ($1 => $acked->{$_}) : () } keys %$acked;
	WorkflowsInvariant::check_invariant($node, $db, $label, \%mine);
	return;
}
