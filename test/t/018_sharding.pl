# 018_sharding.pl
#
# Sharding with PL/Proxy: a router database with the extension
# workflows_router, and four shard servers holding eight partitions (two
# databases each, wf_p0 .. wf_p7, partition k on shard k % 4), each with the
# extension workflows and its own executors.  Everything goes through the
# router:
#
#   - register applies to every partition;
#   - 10,000 one-step instances created with create_batch spread over the
#     shards within 10%;
#   - instances that wait for an event get it through send_event, and pause,
#     resume, terminate, restart, describe, list and the metrics answer for
#     every shard;
#   - one shard is stopped (immediate) while the batch runs: the instances
#     of the other shards keep completing, and calls for an instance of the
#     stopped shard fail with an error naming its partition and the refused
#     connection; once it is started again its instances resume and
#     complete, every effect exactly once (WorkflowsInvariant);
#   - partition 0 is moved to a fifth server (pg_dump of its database,
#     restore in one transaction, the router's p0 pointed at the new
#     server) while the other partitions keep running: calls for it fail
#     clearly during the move, and afterwards its instances -- sleeping and
#     waiting ones among them -- complete on the new server, exactly once.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WorkflowsInvariant;
use JSON::PP;
use Time::HiRes qw(time);

my $started = time;

my $nshards = 4;
my $nparts = 8;           # a power of 2; partition k lives on shard k % 4
my $nbatch = 10_000;      # one-step instances
my $chunk = 2_000;        # per create_batch call
my $ngated = 2 * $nparts; # instances waiting for an event

my @shards;
for my $s (0 .. $nshards - 1)
{
	my $node = PostgreSQL::Test::Cluster->new("shard$s");
	$node->init;
	$node->append_conf(
		'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
fsync = off
log_min_messages = info
});
	$node->start;
	push @shards, $node;
}
my $router = PostgreSQL::Test::Cluster->new('router');
$router->init;
$router->start;

# the workflows every partition runs: one step; a wait for an event, then a
# step; a step, a durable sleep, a step
my $workflows_sql = q{
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);

CREATE FUNCTION one_step(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('s1',
        'INSERT INTO public.effects VALUES ($1::text, ''s1'') RETURNING 1',
        jsonb_build_array(event->>'instanceId'));
END $$;

CREATE FUNCTION gated(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE ev jsonb;
BEGIN
    ev := workflows.wait_for_event('go', 'go', '10 minutes');
    PERFORM workflows.step('after',
        'INSERT INTO public.effects VALUES ($1::text, ''after'')',
        jsonb_build_array(event->>'instanceId'));
    RETURN ev->'payload';
END $$;

CREATE FUNCTION napper(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('before',
        'INSERT INTO public.effects VALUES ($1::text, ''before'')',
        jsonb_build_array(event->>'instanceId'));
    PERFORM workflows.sleep('nap', make_interval(secs => (event->'payload'->>'nap')::float8));
    PERFORM workflows.step('after',
        'INSERT INTO public.effects VALUES ($1::text, ''after'')',
        jsonb_build_array(event->>'instanceId'));
    RETURN '"woke"';
END $$;
};

my %home;    # partition => the node that holds it
for my $p (0 .. $nparts - 1)
{
	my $node = $shards[ $p % $nshards ];
	$home{$p} = $node;
	$node->safe_psql('postgres', "CREATE DATABASE wf_p$p");
	$node->safe_psql("wf_p$p", "CREATE EXTENSION workflows;\n$workflows_sql");
}
for my $s (0 .. $nshards - 1)
{
	$shards[$s]->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
		2 * $nparts / $nshards)
	  or die "executors did not start on shard $s";
}

sub part_connstr
{
	my ($p, $node) = @_;
	return 'host=' . $node->host . ' port=' . $node->port . " dbname=wf_p$p";
}

my $options = join(', ', map { "p$_ '" . part_connstr($_, $home{$_}) . "'" } 0 .. $nparts - 1);
$router->safe_psql(
	'postgres', qq{
CREATE EXTENSION workflows_router CASCADE;
CREATE SERVER workflows_shards FOREIGN DATA WRAPPER plproxy OPTIONS ($options);
CREATE USER MAPPING FOR PUBLIC SERVER workflows_shards;
GRANT USAGE ON FOREIGN SERVER workflows_shards TO PUBLIC;
});
is($router->safe_psql('postgres', 'SELECT workflows.partitions()'),
	$nparts, "the router sees $nparts partitions");

# ---------------------------------------------------------------------------
# register: on every partition
# ---------------------------------------------------------------------------
for my $w (qw(one_step gated napper))
{
	my $ids = $router->safe_psql('postgres', "SELECT workflows.register('$w', '$w(jsonb)')");
	is(scalar(split /,/, $ids), $nparts, "register('$w') returns a version id per partition");
}
my $registered = 0;
for my $p (0 .. $nparts - 1)
{
	$registered += $home{$p}->safe_psql("wf_p$p", 'SELECT count(*) FROM workflows.workflows');
}
is($registered, 3 * $nparts, 'every partition has the three workflows');

# settings per workflow and per role reach every partition
$router->safe_psql('postgres',
	"SELECT workflows.set_flow_control('one_step', '{\"concurrency\": {\"limit\": 50}}')");
$router->safe_psql('postgres', "SELECT workflows.set_secret('token', 'v')");
my ($flow, $secrets) = (0, 0);
for my $p (0 .. $nparts - 1)
{
	$flow += $home{$p}->safe_psql("wf_p$p",
		"SELECT count(*) FROM workflows.workflows WHERE flow_control->'concurrency'->>'limit' = '50'");
	$secrets += $home{$p}->safe_psql("wf_p$p", "SELECT count(*) FROM workflows.secrets WHERE name = 'token'");
}
is($flow, $nparts, 'set_flow_control() through the router sets every partition');
is($secrets, $nparts, 'set_secret() through the router stores the secret on every partition');
$router->safe_psql('postgres', "SELECT workflows.set_flow_control('one_step', NULL)");

my %part_of;    # id => partition (as the router computes it)
sub partition_of
{
	my (@ids) = @_;
	my $list = join(',', map { "('$_')" } @ids);
	for my $line (split /\n/,
		$router->safe_psql('postgres',
			"SELECT id, workflows.partition_of(id) FROM (VALUES $list) v(id)"))
	{
		my ($id, $p) = split /\|/, $line;
		$part_of{$id} = $p;
	}
	return;
}

# ---------------------------------------------------------------------------
# instances that wait for an event, and sleepers (on every partition)
# ---------------------------------------------------------------------------
my @gated = map { sprintf('g-%02d', $_) } 1 .. $ngated;
my @naps = map { "nap-$_" } 1 .. 8;
$router->safe_psql('postgres',
	join('', map { "SELECT workflows.create('gated', '{}', '$_');\n" } @gated));
partition_of(@gated, @naps);
my %acked;    # id => step keys that must be complete in the end
$acked{$_} = [qw(go after)] for @gated;

# a generated id: made at the router, routed by its hash
my $gen = $router->safe_psql('postgres', "SELECT workflows.create('gated')");
like($gen, qr/^[0-9a-f]{8}-[0-9a-f]{4}-/, 'create() without an id makes a UUID at the router');
partition_of($gen);
is( $home{ $part_of{$gen} }->safe_psql("wf_p$part_of{$gen}",
		"SELECT count(*) FROM workflows.instances WHERE id = '$gen'"),
	'1', 'the instance with the generated id is on the partition partition_of() names');
$acked{$gen} = [qw(go after)];
push @gated, $gen;

# ---------------------------------------------------------------------------
# 10,000 one-step instances through create_batch
# ---------------------------------------------------------------------------
my @batch = map { sprintf('i-%05d', $_) } 1 .. $nbatch;
my $t0 = time;
my $returned = 0;
for (my $i = 0; $i < $nbatch; $i += $chunk)
{
	my @c = @batch[ $i .. $i + $chunk - 1 ];
	my $json = encode_json([ map { { id => $_, params => { n => $_ } } } @c ]);
	my $got = $router->safe_psql('postgres',
		"SELECT string_agg(id, ',') FROM workflows.create_batch('one_step', '$json') id");
	$returned++ if $got eq join(',', @c);
}
my $create_secs = time - $t0;
is($returned, $nbatch / $chunk, 'create_batch returned the ids in the order given');
note sprintf('%d instances created through the router in %.1f s', $nbatch, $create_secs);
$acked{$_} = ['s1'] for @batch;
partition_of(@batch);

# ---------------------------------------------------------------------------
# stop one shard while the batch runs
# ---------------------------------------------------------------------------
my $victim = $nshards - 1;
my @victim_parts = grep { $_ % $nshards == $victim } 0 .. $nparts - 1;
$shards[$victim]->stop('immediate');
pass("shard $victim (partitions @victim_parts) stopped while the batch runs");

# the spread, counted on the live shards plus the router's hash for the
# stopped one
my %per_shard;
$per_shard{ $part_of{$_} % $nshards }++ for @batch;
for my $s (0 .. $nshards - 1)
{
	next if $s == $victim;
	my $n = 0;
	$n += $home{$_}->safe_psql("wf_p$_", "SELECT count(*) FROM workflows.instances WHERE id LIKE 'i-%'")
	  for grep { $_ % $nshards == $s } 0 .. $nparts - 1;
	is($n, $per_shard{$s}, "shard $s holds the instances the router hashed to it");
}
my $fair = $nbatch / $nshards;
for my $s (0 .. $nshards - 1)
{
	ok(abs($per_shard{$s} - $fair) <= 0.1 * $fair,
		"shard $s has $per_shard{$s} of $nbatch instances (within 10% of $fair)");
}

# calls for the stopped shard fail clearly
my ($on_victim) = grep { $part_of{$_} % $nshards == $victim } @batch;
my ($ret, $out, $err) = $router->psql('postgres', "SELECT workflows.status('$on_victim')");
isnt($ret, 0, 'status() of an instance on the stopped shard fails');
like($err, qr/\[wf_p$part_of{$on_victim}\].*connection to server.*failed/s,
	'the error names the partition and the failed connection');
note "error: $err";
($ret, $out, $err) = $router->psql('postgres', 'SELECT count(*) FROM workflows.list()');
isnt($ret, 0, 'list() fails while a shard is down (it merges every shard)');

# the other shards' instances all complete meanwhile
for my $p (grep { $_ % $nshards != $victim } 0 .. $nparts - 1)
{
	my $n = grep { $part_of{$_} == $p } @batch;
	$home{$p}->poll_query_until("wf_p$p",
		"SELECT count(*) FROM workflows.instances WHERE id LIKE 'i-%' AND status = 'complete'", $n)
	  or die "the batch did not complete on partition $p";
}
pass('the batch completed on every partition of the live shards while one shard was down');

# events and commands through the router, for instances of the live shards
my @live_gated = grep { $part_of{$_} % $nshards != $victim } @gated;
my ($to_pause, $to_term, @plain) = @live_gated;
is($router->safe_psql('postgres', "SELECT workflows.pause('$to_pause')"),
	'paused', 'pause() through the router');
is($router->safe_psql('postgres', "SELECT workflows.terminate('$to_term')"),
	'terminated', 'terminate() through the router');
$router->safe_psql('postgres',
	join('', map { "SELECT workflows.send_event('$_', 'go', '{\"n\": 1}');\n" } $to_pause, @plain));
for my $id (@plain)
{
	is($router->safe_psql('postgres', "SELECT workflows.wait('$id', '60 s')->>'status'"),
		'complete', "$id got its event through the router and completed");
}
is($router->safe_psql('postgres', "SELECT workflows.status('$to_pause')->>'status'"),
	'paused', 'the paused instance stays paused with its event kept');
like($router->safe_psql('postgres', "SELECT workflows.resume('$to_pause')"),
	qr/^(running|queued)$/, 'resume() through the router');
is($router->safe_psql('postgres', "SELECT workflows.wait('$to_pause', '60 s')->>'status'"),
	'complete', 'the resumed instance takes its kept event and completes');
like($router->safe_psql('postgres', "SELECT workflows.restart('$to_term')"),
	qr/^(running|queued)$/, 'restart() of the terminated instance through the router');
$router->safe_psql('postgres', "SELECT workflows.send_event('$to_term', 'go', '{\"n\": 2}')");
is($router->safe_psql('postgres', "SELECT workflows.wait('$to_term', '60 s')->>'status'"),
	'complete', 'the restarted instance completes');
like(
	$router->safe_psql('postgres', "SELECT string_agg(d, E'\\n') FROM workflows.describe('$to_term') d"),
	qr/status\s+\S+ complete/, 'describe() through the router');
($ret, $out, $err) = $router->psql('postgres', "SELECT workflows.pause('no-such-id')");
like($err, qr/workflow instance "no-such-id" does not exist/,
	'an unknown id is the shard\'s own error');

# ---------------------------------------------------------------------------
# the stopped shard comes back
# ---------------------------------------------------------------------------
$shards[$victim]->start;
for my $p (@victim_parts)
{
	my $n = grep { $part_of{$_} == $p } @batch;
	$home{$p}->poll_query_until("wf_p$p",
		"SELECT count(*) FROM workflows.instances WHERE id LIKE 'i-%' AND status = 'complete'", $n)
	  or die "the batch did not complete on partition $p after the restart";
}
pass('the instances of the restarted shard resumed and completed');
is($router->safe_psql('postgres', "SELECT workflows.status('$on_victim')->>'status'"),
	'complete', 'the router reaches the restarted shard again');
my @victim_gated = grep { $part_of{$_} % $nshards == $victim } @gated;
$router->safe_psql('postgres',
	join('', map { "SELECT workflows.send_event('$_', 'go', '{\"n\": 3}');\n" } @victim_gated));

# merged views: every shard's instances
is( $router->safe_psql('postgres',
		"SELECT count(*) FROM workflows.list(workflow => 'one_step', status => 'complete', page_size => 10000)"),
	$nbatch, 'list() merges every shard (10,000 complete, one page)');
my @page1 = split /\n/, $router->safe_psql('postgres',
	"SELECT id FROM workflows.list(workflow => 'one_step', page_size => 7)");
my @page2 = split /\n/, $router->safe_psql('postgres',
	"SELECT id FROM workflows.list(workflow => 'one_step', page_size => 7, after_id => '$page1[-1]')");
my @both = split /\n/, $router->safe_psql('postgres',
	"SELECT id FROM workflows.list(workflow => 'one_step', page_size => 14)");
is_deeply([ @page1, @page2 ], \@both, 'list() pages with after_id across shards');
is( $router->safe_psql('postgres',
		"SELECT sum(created) || '/' || sum(completed) FROM workflows.metrics('1 day', now() - interval '1 hour') WHERE workflow = 'one_step'"),
	"$nbatch/$nbatch", 'metrics() sums every shard');
is( $router->safe_psql('postgres',
		"SELECT runs || '/' || completed || '/' || (attempts - failures) FROM workflows.step_metrics WHERE workflow = 'one_step'"),
	"$nbatch/$nbatch/$nbatch",
	'step_metrics sums every shard (failed attempts: those the stopped shard interrupted)');
is( $router->safe_psql('postgres',
		"SELECT sum(created) FROM workflows.metrics_hourly WHERE workflow = 'one_step'"),
	$nbatch, 'metrics_hourly sums every shard');
is( $router->safe_psql('postgres',
		"SELECT sum(running) FROM workflows.executor_status()"),
	2 * $nparts, 'executor_status() shows the executors of every partition');

for my $id (@victim_gated)
{
	is($router->safe_psql('postgres', "SELECT workflows.wait('$id', '60 s')->>'status'"),
		'complete', "$id (on the restarted shard) got its event and completed");
}

# an ordinary role: the router connects to the shards as the calling role,
# so the shards check its rights and row-level security applies
$_->safe_psql('postgres', 'CREATE ROLE app LOGIN') for @shards;
$home{$_}->safe_psql("wf_p$_", 'GRANT INSERT ON effects TO app') for 0 .. $nparts - 1;
$router->safe_psql('postgres', 'CREATE ROLE app');
is( $router->safe_psql('postgres',
		"SET ROLE app; SELECT workflows.wait(workflows.create('one_step', '{}', 'app-1'), '60 s')->>'status'"),
	'complete', 'a role without privileges creates and waits through the router');
partition_of('app-1');
$acked{'app-1'} = ['s1'];
is( $home{ $part_of{'app-1'} }->safe_psql("wf_p$part_of{'app-1'}",
		"SELECT owner FROM workflows.instances WHERE id = 'app-1'"),
	'app', 'the instance belongs to the calling role on its shard');
is($router->safe_psql('postgres', 'SET ROLE app; SELECT string_agg(id, \',\') FROM workflows.list()'),
	'app-1', 'list() through the router shows the role its own instances only');
($ret, $out, $err) = $router->psql('postgres', "SET ROLE app; SELECT workflows.status('$batch[0]')");
like($err, qr/permission denied for workflow instance "$batch[0]"/,
	'another role\'s instance is refused by its shard');

for my $p (0 .. $nparts - 1)
{
	my %a = map { ($_ => $acked{$_}) } grep { $part_of{$_} == $p } keys %acked;
	check_invariant($home{$p}, "wf_p$p", "partition $p", \%a, qr/^go$/);
}

# ---------------------------------------------------------------------------
# move partition 0 to a new server while the others keep running
# ---------------------------------------------------------------------------
my $new = PostgreSQL::Test::Cluster->new('shard_new');
$new->init;
# (A restored database gets new function OIDs: the engine takes each
# registered workflow function for a replaced one and pins a copy of it,
# once, the first time an instance of that version runs; two executors do
# that one at a time.)
$new->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
fsync = off
log_min_messages = info
});
$new->start;

# work on every partition at the time of the move: a waiter and a sleeper
my @move_gated = map { "mg-$_" } 1 .. 24;
partition_of(@move_gated);
$router->safe_psql('postgres',
	join('', map { "SELECT workflows.create('gated', '{}', '$_');\n" } @move_gated));
$router->safe_psql('postgres',
	join('', map { "SELECT workflows.create('napper', '{\"nap\": 8}', '$_');\n" } @naps));
$acked{$_} = [qw(go after)] for @move_gated;
$acked{$_} = [qw(before nap after)] for @naps;
my $old = $home{0};
$old->poll_query_until('wf_p0',
	"SELECT count(*) = 0 FROM workflows.instances WHERE status IN ('queued', 'running')")
  or die 'partition 0 did not settle';
my %nap_end;
for my $line (split /\n/,
	$old->safe_psql('wf_p0', "SELECT instance_id, extract(epoch FROM wake_at) FROM workflows.steps WHERE key = 'nap'"))
{
	my ($id, $t) = split /\|/, $line;
	$nap_end{$id} = $t;
}
ok(scalar(keys %nap_end) >= 1, 'partition 0 has sleepers at the time of the move: ' . join(',', sort keys %nap_end));
my @p0_gated = grep { $part_of{$_} == 0 } @move_gated;
ok(scalar(@p0_gated) >= 1, 'partition 0 has waiters at the time of the move');

# 1. the router stops sending calls to the old copy: p0 names the new
#    server, where the database does not exist yet
my $move_started = time;
$router->safe_psql('postgres',
	"ALTER SERVER workflows_shards OPTIONS (SET p0 '" . part_connstr(0, $new) . "')");
($ret, $out, $err) = $router->psql('postgres', "SELECT workflows.status('$p0_gated[0]')");
like($err, qr/\[wf_p0\].*database "wf_p0" does not exist/s,
	'during the move, calls for partition 0 fail clearly');

# 2. dump it (one snapshot), then drop the old copy (and its executors)
my $dump = $PostgreSQL::Test::Utils::tmp_check . '/wf_p0.dump';
$old->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', 'wf_p0' ], 'pg_dump of partition 0');
$old->safe_psql('postgres', 'DROP DATABASE wf_p0 WITH (FORCE)');

# the other partitions keep running meanwhile
my @during = grep { $part_of{$_} != 0 } @move_gated;
$router->safe_psql('postgres',
	join('', map { "SELECT workflows.send_event('$_', 'go', '{\"n\": 4}');\n" } @during));
for my $id (@during)
{
	is($router->safe_psql('postgres', "SELECT workflows.wait('$id', '60 s')->>'status'"),
		'complete', "$id (partition $part_of{$id}) completed during the move");
}

# 3. restore in one transaction under another name (executors start at its
#    commit, with every row there), then take the name the router uses
$new->safe_psql('postgres', 'CREATE ROLE app LOGIN');    # the roles first
$new->safe_psql('postgres', 'CREATE DATABASE wf_p0_restoring');
$new->command_ok(
	[ 'pg_restore', '--single-transaction', '--exit-on-error', '-d', 'wf_p0_restoring', $dump ],
	'pg_restore of partition 0 on the new server');
$new->safe_psql('postgres', 'ALTER DATABASE wf_p0_restoring RENAME TO wf_p0');
$home{0} = $new;
note sprintf('partition 0 unavailable for %.1f s', time - $move_started);

$new->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'wf_p0'",
	'2')
  or die 'executors did not start for the moved partition';
my $p0_up = time;
is($router->safe_psql('postgres', "SELECT workflows.status('$p0_gated[0]')->>'status'"),
	'waiting', 'after the move the router reaches partition 0 on the new server');
$router->safe_psql('postgres',
	join('', map { "SELECT workflows.send_event('$_', 'go', '{\"n\": 5}');\n" } @p0_gated));
for my $id (@p0_gated, @naps)
{
	my $doc = decode_json($router->safe_psql('postgres', "SELECT workflows.wait('$id', '60 s')"));
	is($doc->{status}, 'complete', "$id (partition $part_of{$id}) completed")
	  or diag explain $doc;
}
# a nap that ended while the partition was moving (the move takes longer
# than the nap on a slow machine) wakes once the new server's executors run
for my $id (sort keys %nap_end)
{
	my $woke = $new->safe_psql('wf_p0',
		"SELECT extract(epoch FROM started_at) FROM workflows.steps WHERE instance_id = '$id' AND key = 'after'");
	my $due = $nap_end{$id} > $p0_up ? $nap_end{$id} : $p0_up;
	ok($woke >= $nap_end{$id} && $woke < $due + 10,
		sprintf('%s woke at its time on the new server, or once it ran (+%.2f s after its time, %.2f s after the executors started)',
			$id, $woke - $nap_end{$id}, $woke - $p0_up));
}

for my $p (0 .. $nparts - 1)
{
	my %a = map { ($_ => $acked{$_}) } grep { $part_of{$_} == $p } keys %acked;
	check_invariant($home{$p}, "wf_p$p", "partition $p, after the move", \%a, qr/^(go|nap)$/);
}
is( $router->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM workflows.list('gated', 'complete', page_size => 10000))
		      + (SELECT count(*) FROM workflows.list('napper', 'complete', page_size => 10000))"),
	scalar(@gated) + scalar(@move_gated) + scalar(@naps),
	'list() after the move: every waiter and sleeper complete');

$_->stop for @shards, $new, $router;
note sprintf('018_sharding took %.1f s', time - $started);
done_testing();
