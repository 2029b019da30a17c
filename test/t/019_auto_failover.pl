# 019_auto_failover.pl
#
# Automatic failover with pg_auto_failover.
#
# pg_autoctl builds a monitor, a primary and a synchronous standby, all on
# 127.0.0.1, with shared_preload_libraries = 'workflows' on both nodes (a
# line of postgresql.conf after pg_autoctl's own include, which sets
# shared_preload_libraries too).  The monitor's health checks are made
# short.  The primary runs 1,000 instances: steps, durable sleeps that end
# after the failover, waits for events.  Mid-run the primary's node dies:
# its pg_autoctl is killed with SIGKILL (with its keeper alive, pg_autoctl
# would just restart the killed postmaster on the same node, a crash
# restart that 001_crash_exactly_once covers), then its postmaster.  Then:
#
#   - the monitor promotes the standby by itself;
#   - executors start on the new primary, and never ran on it while it was
#     a standby;
#   - every acknowledged instance completes, every step the primary
#     reported complete is still complete, every in-database effect is
#     there exactly once (WorkflowsInvariant);
#   - sleepers wake at their time;
#   - a client with a multi-host connection string
#     (target_session_attrs=read-write) reconnects to the new primary and
#     carries on (sends the remaining events);
#   - the old primary, started again, rejoins as a standby and runs no
#     executor.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WorkflowsInvariant;
use IPC::Run;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use Time::HiRes qw(time usleep);

my $started = time;

# ---------------------------------------------------------------------------
# pg_autoctl and the monitor's extension must be there
# ---------------------------------------------------------------------------
my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
my $bindir = `$pg_config --bindir 2>/dev/null`;
chomp $bindir;
if (!$bindir)
{
	# the tests run with the server's bin directory first in PATH
	my ($initdb) = grep { -x "$_/initdb" } split /:/, $ENV{PATH};
	$bindir = $initdb // '';
}
my $sharedir = -x "$bindir/pg_config" ? `$bindir/pg_config --sharedir` : '';
chomp $sharedir;
my ($autoctl) =
  grep { defined $_ && -x $_ } ($ENV{PG_AUTOCTL}, "$bindir/pg_autoctl", '/usr/bin/pg_autoctl');
plan skip_all => 'pg_autoctl (pg_auto_failover) is not installed' unless $autoctl;
plan skip_all => "the pgautofailover extension is not installed in $sharedir"
  unless $sharedir && -f "$sharedir/extension/pgautofailover.control";
plan skip_all => 'pg_autoctl refuses to run as root' if $> == 0;

my $user = getpwuid($>);
my $base = PostgreSQL::Test::Utils::tempdir;
# pg_autoctl keeps its configuration, state and pid files under these
$ENV{XDG_CONFIG_HOME} = "$base/config";
$ENV{XDG_DATA_HOME} = "$base/data";
$ENV{XDG_RUNTIME_DIR} = "$base/run";
make_path("$base/run");

my $nbatch = 700;    # three-step instances
my $nnap = 100;      # sleepers: wake after the failover
my $nev = 200;       # event waiters: half get their event before the failover
my $nap = 25;        # seconds

my $monitor = PostgreSQL::Test::Cluster->new('monitor');
my $node1 = PostgreSQL::Test::Cluster->new('node1');
my $node2 = PostgreSQL::Test::Cluster->new('node2');
my %service;    # pgdata => IPC::Run handle of its `pg_autoctl run`

sub autoctl
{
	my @args = @_;
	my ($out, $err);
	my $ok = IPC::Run::run([ $autoctl, @args ], '>', \$out, '2>', \$err);
	die "pg_autoctl @args failed:\n$out$err" unless $ok;
	return $out;
}

sub run_service
{
	my ($node) = @_;
	my $log = $node->basedir . '/pg_autoctl.log';
	$service{ $node->data_dir } = IPC::Run::start([ $autoctl, 'run', '--pgdata', $node->data_dir ],
		'>>', $log, '2>&1');
	return;
}

# the pids of a process and all its descendants
sub process_tree
{
	my ($pid) = @_;
	my @all = ($pid);
	for my $child (split /\s+/, `pgrep -P $pid 2>/dev/null`)
	{
		push @all, process_tree($child) if $child =~ /^\d+$/;
	}
	return @all;
}

END
{
	# stop every pg_autoctl service this test started (and its Postgres)
	for my $pgdata (keys %service)
	{
		next unless -d $pgdata;
		IPC::Run::run([ $autoctl, 'stop', '--pgdata', $pgdata, '--immediate' ],
			'>', '/dev/null', '2>', '/dev/null');
	}
	for my $h (values %service)
	{
		eval { $h->kill_kill(grace => 5); };
	}
	# and any Postgres they left behind
	for my $node ($monitor, $node1, $node2)
	{
		my $pidfile = $node->data_dir . '/postmaster.pid';
		next unless -f $pidfile;
		IPC::Run::run([ "$bindir/pg_ctl", '-D', $node->data_dir, '-m', 'immediate', 'stop' ],
			'>', '/dev/null', '2>', '/dev/null');
	}
}

sub state_of
{
	my ($name) = @_;
	return $monitor->safe_psql('pg_auto_failover',
		"SELECT reportedstate || '/' || goalstate FROM pgautofailover.node WHERE nodename = '$name'");
}

sub wait_state
{
	my ($name, $re, $secs) = @_;
	my $deadline = time + ($secs // 180);
	my $s = '';
	while (time < $deadline)
	{
		$s = state_of($name);
		return $s if $s =~ $re;
		usleep(200_000);
	}
	die "node $name did not reach state $re (last: $s)";
}

# ---------------------------------------------------------------------------
# The monitor, with short health checks
# ---------------------------------------------------------------------------
$monitor->init;
$monitor->append_conf(
	'postgresql.conf', q{
listen_addresses = '127.0.0.1'
shared_buffers = 32MB
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 3000
pgautofailover.startup_grace_period = 2000
pgautofailover.primary_demote_timeout = 5000
});
autoctl('create', 'monitor', '--pgdata', $monitor->data_dir, '--pgport', $monitor->port,
	'--listen', '127.0.0.1', '--hostname', '127.0.0.1', '--auth', 'trust', '--no-ssl',
	'--pgctl', "$bindir/pg_ctl");
run_service($monitor);
$monitor->poll_query_until('pg_auto_failover', 'SELECT 1', '1')
  or die 'the monitor did not start';
my $monitor_uri = 'postgres://autoctl_node@127.0.0.1:' . $monitor->port
  . '/pg_auto_failover?sslmode=disable';
pass('pg_autoctl created and runs the monitor');

# ---------------------------------------------------------------------------
# The primary: our own initdb with the extension preloaded, then pg_autoctl
# ---------------------------------------------------------------------------
$node1->init(allows_streaming => 1);
$node1->append_conf(
	'postgresql.conf', q{
# after pg_autoctl's include (first line): these win
shared_preload_libraries = 'workflows'
listen_addresses = '127.0.0.1'
shared_buffers = 64MB
workflows.max_workers = 2
max_worker_processes = 16
wal_log_hints = on
log_min_messages = info
});
my @node_opts = (
	'--hostname', '127.0.0.1', '--listen', '127.0.0.1', '--auth', 'trust', '--no-ssl',
	'--username', $user, '--dbname', 'postgres', '--pgctl', "$bindir/pg_ctl",
	'--monitor', $monitor_uri);
autoctl('create', 'postgres', '--pgdata', $node1->data_dir, '--pgport', $node1->port,
	'--pghost', $node1->host, '--name', 'node1', @node_opts);
run_service($node1);
wait_state('node1', qr{^single/single$});
$node1->poll_query_until('postgres', 'SELECT 1', '1') or die 'node1 is not up';
pass('node1 runs as the single node of the formation');

$node1->safe_psql('postgres', 'CREATE EXTENSION workflows');
$node1->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'", '2')
  or die 'executors did not start on node1';

$node1->safe_psql(
	'postgres', q{
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL,
                      at timestamptz NOT NULL DEFAULT clock_timestamp());

CREATE FUNCTION three_steps(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
BEGIN
    FOR i IN 1 .. 3 LOOP
        PERFORM workflows.step('s' || i,
            'INSERT INTO public.effects (instance, step) '
            'SELECT $1::text, $2::text FROM pg_sleep(0.01)',
            jsonb_build_array(id, 's' || i));
    END LOOP;
    RETURN '"done"';
END $$;

CREATE FUNCTION napper(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
BEGIN
    PERFORM workflows.step('before',
        'INSERT INTO public.effects (instance, step) VALUES ($1::text, ''before'')',
        jsonb_build_array(id));
    PERFORM workflows.sleep('nap', make_interval(secs => (event->'payload'->>'nap')::float8));
    PERFORM workflows.step('after',
        'INSERT INTO public.effects (instance, step) VALUES ($1::text, ''after'')',
        jsonb_build_array(id));
    RETURN '"woke"';
END $$;

CREATE FUNCTION listener(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    ev jsonb;
BEGIN
    PERFORM workflows.step('before',
        'INSERT INTO public.effects (instance, step) VALUES ($1::text, ''before'')',
        jsonb_build_array(id));
    ev := workflows.wait_for_event('go', 'go', '10 minutes');
    PERFORM workflows.step('after',
        'INSERT INTO public.effects (instance, step) VALUES ($1::text, ''after'')',
        jsonb_build_array(id));
    RETURN ev->'payload';
END $$;

SELECT workflows.register('three_steps', 'three_steps(jsonb)');
SELECT workflows.register('napper', 'napper(jsonb)');
SELECT workflows.register('listener', 'listener(jsonb)');
});

# ---------------------------------------------------------------------------
# The standby: pg_autoctl clones node1 (postgresql.conf with it)
# ---------------------------------------------------------------------------
autoctl('create', 'postgres', '--pgdata', $node2->data_dir, '--pgport', $node2->port,
	'--pghost', $node2->host, '--name', 'node2', @node_opts);
run_service($node2);
wait_state('node2', qr{^secondary/secondary$});
wait_state('node1', qr{^primary/primary$});
$node1->poll_query_until('postgres',
	"SELECT sync_state IN ('sync', 'quorum') FROM pg_stat_replication WHERE application_name LIKE 'pgautofailover_standby_%'")
  or die 'node2 did not become a synchronous standby';
pass('node2 is a synchronous standby of node1');
is($node2->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'node2 is in recovery');

# clients use both nodes' addresses and want the one that takes writes
my $client_connstr = sprintf(
	'host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=%s target_session_attrs=read-write connect_timeout=2',
	$node1->port, $node2->port, $user);

sub client
{
	my ($sql) = @_;
	my ($out, $err);
	IPC::Run::run([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $client_connstr, '-c', $sql ],
		'>', \$out, '2>', \$err)
	  or die "client: $err";
	chomp $out;
	return $out;
}

# like client(), but retried while no read-write node answers
sub client_retry
{
	my ($sql, $secs) = @_;
	my $deadline = time + ($secs // 120);
	my $tries = 0;
	while (1)
	{
		$tries++;
		my $out = eval { client($sql) };
		return ($out, $tries) if defined $out;
		die $@ if time > $deadline;
		usleep(500_000);
	}
}

is(client('SELECT inet_server_port()'), $node1->port, 'the client reaches node1, the primary');

# ---------------------------------------------------------------------------
# Work
# ---------------------------------------------------------------------------
my @naps = map { "nap-$_" } 1 .. $nnap;
my @evs = map { "ev-$_" } 1 .. $nev;
my @batch = map { "w-$_" } 1 .. $nbatch;
my %acked;

my $sql = "BEGIN;\n";
$sql .= "SELECT workflows.create('napper', '{\"nap\": $nap}', '$_');\n" for @naps;
$sql .= "SELECT workflows.create('listener', '{}', '$_');\n" for @evs;
$sql .= "COMMIT;\n";
client($sql);
$acked{$_} = [qw(before nap after)] for @naps;
$acked{$_} = [qw(before go after)] for @evs;
$node1->poll_query_until(
	'postgres', q{
SELECT count(*) FROM workflows.steps WHERE status = 'waiting' AND type IN ('sleep', 'event')
}, $nnap + $nev)
  or die 'the sleepers and listeners did not reach their waits';

my %nap_end;
for my $line (split /\n/,
	$node1->safe_psql('postgres',
		"SELECT instance_id, extract(epoch FROM wake_at) FROM workflows.steps WHERE key = 'nap'"))
{
	my ($id, $t) = split /\|/, $line;
	$nap_end{$id} = $t;
}

my $json = '[' . join(',', map { "{\"id\": \"$_\"}" } @batch) . ']';
is(client("SELECT count(*) FROM workflows.create_batch('three_steps', '$json')"),
	$nbatch, "create_batch acknowledged $nbatch instances");
$acked{$_} = [qw(s1 s2 s3)] for @batch;
is(scalar(keys %acked), 1000, '1,000 instances acknowledged');

# events for half of the listeners, acknowledged before the failover
$sql = "BEGIN;\n";
$sql .= "SELECT workflows.send_event('$_', 'go', '{\"sent\": \"before\"}');\n"
  for @evs[ 0 .. $nev / 2 - 1 ];
$sql .= "COMMIT;\n";
client($sql);

my $third = int($nbatch * 3 / 3);
$node1->poll_query_until('postgres',
	"SELECT count(*) >= $third FROM workflows.steps WHERE instance_id LIKE 'w-%' AND status = 'complete'")
  or die 'the batch made no progress';

is( $node2->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type IN ('workflows executor', 'workflows launcher')
}),
	'0',
	'no workflows launcher or executor runs on the standby while the primary works');

# ---------------------------------------------------------------------------
# The primary's node dies
# ---------------------------------------------------------------------------
my $complete_before = $node1->safe_psql(
	'postgres', q{
SELECT string_agg(instance_id || '/' || key, ',' ORDER BY instance_id, key)
  FROM workflows.steps WHERE status = 'complete'
});
my $keeper = $service{ $node1->data_dir }->{KIDS}[0]{PID};
my $postmaster = (split /\n/, slurp_file($node1->data_dir . '/postmaster.pid'))[0];
my @keepers = process_tree($keeper);
@keepers = grep { $_ != $postmaster } @keepers;
my %pm_tree = map { ($_ => 1) } process_tree($postmaster);
@keepers = grep { !$pm_tree{$_} } @keepers;
kill 'KILL', @keepers;
ok(kill('KILL', $postmaster), "SIGKILL to node1's postmaster ($postmaster) and pg_autoctl (@keepers)");
my $killed_at = time;
# reap it: a zombie would still look alive to the next pg_autoctl (pid file)
eval { $service{ $node1->data_dir }->finish; };
delete $service{ $node1->data_dir };

my @complete_before = split /,/, $complete_before;
my $batch_done = grep { m{^w-} } @complete_before;
note "before the kill: $batch_done of " . (3 * $nbatch) . ' batch steps complete';
ok($batch_done < 3 * $nbatch, 'node1 died with batch steps still to run');

# ---------------------------------------------------------------------------
# Automatic promotion
# ---------------------------------------------------------------------------
my $s = wait_state('node2', qr{^(wait_primary|primary)/(wait_primary|primary)$}, 120);
my $promoted_at = time;
note sprintf('node2 is %s %.1f s after the kill', $s, $promoted_at - $killed_at);
pass("the monitor promoted node2 ($s)");
$node2->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'node2 left recovery';
$node2->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'", '2')
  or die 'executors did not start on node2';
my $executors_up = time;
note sprintf('executors up on node2 %.1f s after the kill', $executors_up - $killed_at);
pass('executors run on the promoted node');

# the client carries on with the same connection string
my ($port, $tries) = client_retry('SELECT inet_server_port()');
is($port, $node2->port, "the client reconnects to node2 (after $tries tries)");
$sql = "BEGIN;\n";
$sql .= "SELECT workflows.send_event('$_', 'go', '{\"sent\": \"after\"}');\n"
  for @evs[ $nev / 2 .. $nev - 1 ];
$sql .= "COMMIT;\n";
client_retry($sql);
pass('the client sent the remaining events to the new primary');

check_still_complete($node2, 'postgres',
	'no step reported complete on node1 is lost on node2', @complete_before);

my $total = scalar(keys %acked);
$node2->poll_query_until('postgres',
	"SELECT count(*) FROM workflows.instances WHERE status IN ('complete', 'errored', 'terminated')",
	$total)
  or die 'the instances did not all finish on node2';
is($node2->safe_psql('postgres', 'SELECT status, count(*) FROM workflows.instances GROUP BY status'),
	"complete|$total", "all $total instances complete on node2");
check_invariant($node2, 'postgres', 'after the failover', \%acked, qr/^(nap|go)$/);
is( $node2->safe_psql('postgres',
		"SELECT count(*) FROM workflows.instances WHERE id LIKE 'ev-%' AND output->>'sent' = 'before'"),
	$nev / 2, 'the events acknowledged before the failover were delivered');

my %after_start;
for my $line (split /\n/,
	$node2->safe_psql('postgres',
		"SELECT instance_id, extract(epoch FROM started_at) FROM workflows.steps WHERE key = 'after' AND instance_id LIKE 'nap-%'"))
{
	my ($id, $t) = split /\|/, $line;
	$after_start{$id} = $t;
}
# Executors claim due instances oldest wake time first: a sleeper whose
# time comes while batch instances (due since their creation) still wait
# takes its turn after them, and on a slow machine the batch outlasts the
# nap.  So those due after the executors were up must start within 5 s of
# the later of their time and the batch's end (a lost wake-up waits for the
# 10 s poll).
my $batch_done = $node2->safe_psql('postgres',
	"SELECT extract(epoch FROM max(ended_at)) FROM workflows.instances WHERE id LIKE 'w-%'");
note sprintf('the batch ended %.1f s after the executors were up on node2', $batch_done - $executors_up);
my ($early, $late, $checked, $worst) = (0, 0, 0, 0);
for my $id (@naps)
{
	my $d = $after_start{$id} - $nap_end{$id};
	$early++ if $d < 0;
	# those due after the executors were up must wake on time
	next if $nap_end{$id} < $executors_up;
	$checked++;
	my $turn = $after_start{$id} - ($batch_done > $nap_end{$id} ? $batch_done : $nap_end{$id});
	$worst = $turn if $turn > $worst;
	$late++ if $turn > 5;
}
is($early, 0, 'no sleeper woke before its time');
ok($checked > 0, "$checked sleepers were due after the failover");
is($late, 0, sprintf('they woke at their time on node2, or at their turn after the batch (latest +%.2f s)', $worst));

is( $node2->safe_psql('postgres',
		"SELECT count(*) FROM workflows.attempts WHERE NOT success AND error->>'sqlstate' NOT IN ('WF008', '57P01')"),
	'0', 'no attempt failed but those the failover interrupted');

# ---------------------------------------------------------------------------
# The old primary rejoins as a standby, without executors
# ---------------------------------------------------------------------------
run_service($node1);
wait_state('node1', qr{^secondary/secondary$}, 180);
wait_state('node2', qr{^primary/primary$}, 60);
$node1->poll_query_until('postgres', 'SELECT pg_is_in_recovery()')
  or die 'node1 did not come back as a standby';
pass('node1 rejoined as a standby of node2');
is( $node1->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type IN ('workflows executor', 'workflows launcher')
}),
	'0',
	'no workflows launcher or executor runs on the rejoined standby');
# the standby replays what node2 did after the failover
$node2->safe_psql('postgres', 'CREATE TABLE after_rejoin ()');
$node1->poll_query_until('postgres',
	"SELECT count(*) FROM pg_class WHERE relname = 'after_rejoin'", '1')
  or die 'node1 does not replay node2';
is($node1->safe_psql('postgres', 'SELECT count(*) FROM workflows.instances WHERE status = \'complete\''),
	$total, 'the rejoined standby has every instance complete');
is(client('SELECT inet_server_port()'), $node2->port, 'clients still reach node2, the primary');

note sprintf('019_auto_failover took %.1f s', time - $started);
done_testing();
