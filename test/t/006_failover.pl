# 006_failover.pl
#
# Failover to a synchronous streaming standby.
#
# A primary runs instances of several shapes -- 50 instances of five slow
# steps, instances in a durable sleep, instances waiting for an event -- and
# replicates synchronously to a standby.  Nothing of the extension runs on
# the standby (its launcher starts only once recovery has finished).  The
# primary is stopped with "immediate" in the middle of the work, the standby
# is promoted, and on the promoted node:
#
#   - the launcher and the executors start;
#   - every acknowledged create exists and every instance completes;
#   - every step that the primary reported complete just before the stop is
#     complete on the promoted node, with its effect (synchronous
#     replication: no acknowledged step is lost);
#   - every step's effect is there exactly once, and there is no memo
#     without its effect nor an effect without its memo;
#   - events sent before the failover (acknowledged) and after it are
#     delivered; sleepers wake at their time (plus a few seconds);
#   - no instance is left "running" with no process behind it.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WorkflowsInvariant;
use JSON::PP;
use Time::HiRes qw(time);

my $started = time;

my $nbatch = 50;    # five-step instances
my $nnap = 4;       # long sleepers: wake after the failover
my $nshort = 4;     # short sleepers: their time passes around the failover
my $nev = 6;        # event waiters: half get their event before the stop
my $long_nap = 20;  # seconds
my $short_nap = 2;  # seconds

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
wal_level = replica
log_min_messages = info
});
$primary->start;

$primary->safe_psql('postgres', 'CREATE EXTENSION workflows');
$primary->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
	'2')
  or die 'executors did not start on the primary';

# Effects go into a table with no unique constraint: a step that ran twice
# would show as two rows.
$primary->safe_psql(
	'postgres', q{
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL,
                      at timestamptz NOT NULL DEFAULT clock_timestamp());

-- five steps, each sleeps 50 ms then writes its effect
CREATE FUNCTION five_steps(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    total int := 0;
BEGIN
    FOR i IN 1 .. 5 LOOP
        total := total + (workflows.step('s' || i,
            'INSERT INTO public.effects (instance, step) '
            'SELECT $1::text, $2::text FROM pg_sleep(0.05) RETURNING 1',
            jsonb_build_array(id, 's' || i)))::int;
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
        'INSERT INTO public.effects (instance, step) VALUES ($1::text, ''before'')',
        jsonb_build_array(id));
    PERFORM workflows.sleep('nap', make_interval(secs => (event->'payload'->>'nap')::float8));
    PERFORM workflows.step('after',
        'INSERT INTO public.effects (instance, step) VALUES ($1::text, ''after'')',
        jsonb_build_array(id));
    RETURN '"woke"'::jsonb;
END
$$;

-- a step, a wait for event "go", a step that records the payload
CREATE FUNCTION listener(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    ev jsonb;
BEGIN
    PERFORM workflows.step('before',
        'INSERT INTO public.effects (instance, step) VALUES ($1::text, ''before'')',
        jsonb_build_array(id));
    ev := workflows.wait_for_event('go', 'go', '5 minutes');
    PERFORM workflows.step('after',
        'INSERT INTO public.effects (instance, step) VALUES ($1::text, ''after'')',
        jsonb_build_array(id));
    RETURN ev->'payload';
END
$$;

SELECT workflows.register('five_steps', 'five_steps(jsonb)');
SELECT workflows.register('napper', 'napper(jsonb)');
SELECT workflows.register('listener', 'listener(jsonb)');
});

# ---------------------------------------------------------------------------
# The standby, then synchronous replication to it.
# ---------------------------------------------------------------------------
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

# Only now: the standby's own configuration (copied by the backup) must not
# wait for a synchronous standby once it is promoted.
$primary->append_conf('postgresql.conf', "synchronous_standby_names = '*'\n");
$primary->reload;
$primary->poll_query_until('postgres',
	"SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'",
	'sync')
  or die 'the standby did not become a synchronous standby';
pass('the standby streams synchronously');

# a commit on the primary is replayed on the standby
$primary->safe_psql('postgres', 'CREATE TABLE replicated_marker ()');
$primary->wait_for_catchup($standby, 'replay');
is( $standby->safe_psql('postgres',
		"SELECT count(*) FROM pg_class WHERE relname = 'replicated_marker'"),
	'1', 'the standby replays the primary');

# ---------------------------------------------------------------------------
# Work on the primary.
# ---------------------------------------------------------------------------
my @naps = map { "nap-$_" } 1 .. $nnap;
my @shorts = map { "short-$_" } 1 .. $nshort;
my @evs = map { "ev-$_" } 1 .. $nev;
my @batch = map { "w-$_" } 1 .. $nbatch;
my %acked;    # id => expected step keys

# sleepers and listeners first, so that they reach their waits before the
# batch occupies the executors
my $sql = "BEGIN;\n";
$sql .= "SELECT workflows.create('napper', '{\"nap\": $long_nap}', '$_');\n" for @naps;
$sql .= "SELECT workflows.create('napper', '{\"nap\": $short_nap}', '$_');\n" for @shorts;
$sql .= "SELECT workflows.create('listener', '{}', '$_');\n" for @evs;
$sql .= "COMMIT;\n";
$primary->safe_psql('postgres', $sql);
$acked{$_} = [qw(before nap after)] for @naps, @shorts;
$acked{$_} = [qw(before go after)] for @evs;

$primary->poll_query_until(
	'postgres', q{
SELECT count(*) FROM workflows.instances i JOIN workflows.steps s ON s.instance_id = i.id
 WHERE i.status = 'waiting' AND s.status = 'waiting' AND s.type IN ('sleep', 'event')
}, $nnap + $nshort + $nev)
  or die 'the sleepers and listeners did not reach their waits';
pass('sleepers and listeners wait');

my %nap_end;    # id => epoch seconds when its nap ends
for my $line (split /\n/,
	$primary->safe_psql('postgres',
		"SELECT instance_id, extract(epoch FROM wake_at) FROM workflows.steps WHERE key = 'nap'"))
{
	my ($id, $t) = split /\|/, $line;
	$nap_end{$id} = $t;
}
is(scalar(keys %nap_end), $nnap + $nshort, 'every sleeper has its wake time');

my $batch_json = encode_json(
	[ map { { id => $_, params => { n => $_ } } } @batch ]);
my $created = $primary->safe_psql('postgres',
	"SELECT string_agg(id, ',') FROM workflows.create_batch('five_steps', '$batch_json') id");
is($created, join(',', @batch), "create_batch acknowledged $nbatch instances");
$acked{$_} = [qw(s1 s2 s3 s4 s5)] for @batch;

# Let about a third of the batch's steps complete, then fail over while
# steps are in flight.
my $third = int($nbatch * 5 / 3);
$primary->poll_query_until(
	'postgres', qq{
SELECT count(*) >= $third FROM workflows.steps
 WHERE instance_id LIKE 'w-%' AND status = 'complete'
})
  or die 'the batch made no progress';

# the standby replays all of this and runs none of it
is( $standby->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type IN ('workflows executor', 'workflows launcher')
}),
	'0',
	'no workflows launcher or executor runs on the standby while the primary works');

# Events for half of the listeners, acknowledged before the stop.
$sql = "BEGIN;\n";
$sql .= "SELECT workflows.send_event('$_', 'go', '{\"sent\": \"before\"}');\n"
  for @evs[ 0 .. $nev / 2 - 1 ];
$sql .= "COMMIT;\n";
$primary->safe_psql('postgres', $sql);

# What the primary reports complete, right before it goes away.
my $complete_before = $primary->safe_psql(
	'postgres', q{
SELECT string_agg(instance_id || '/' || key, ',' ORDER BY instance_id, key)
  FROM workflows.steps WHERE status = 'complete'
});
my $final_before = $primary->safe_psql('postgres',
	"SELECT count(*) FROM workflows.instances WHERE status = 'complete'");
my $running_before = $primary->safe_psql(
	'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'workflows executor' AND state = 'active'
});
$primary->stop('immediate');
my $stopped_at = time;

my @complete_before = split /,/, $complete_before;
my $batch_done_before = grep { m{^w-} } @complete_before;
note "before the stop: $batch_done_before of " . ($nbatch * 5)
  . " batch steps complete, $final_before instances complete, "
  . "$running_before executor(s) active";
ok($batch_done_before < $nbatch * 5,
	'the primary stopped with batch steps still to run');

# ---------------------------------------------------------------------------
# The standby ran nothing while it was a standby.
# ---------------------------------------------------------------------------
is( $standby->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type IN ('workflows executor', 'workflows launcher')
}),
	'0',
	'no workflows launcher or executor runs on the standby after the primary stopped');
ok( slurp_file($standby->logfile) !~ /workflows launcher started/,
	'the standby log shows no launcher start before the promotion');
my $log_offset = -s $standby->logfile;

# ---------------------------------------------------------------------------
# Promote.
# ---------------------------------------------------------------------------
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
$standby->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
	'2')
  or die 'executors did not start on the promoted node';
my $executors_up = time;
note sprintf('executors up on the promoted node %.1f s after the stop',
	$executors_up - $stopped_at);
is( $standby->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows launcher'"),
	'1', 'the launcher runs on the promoted node');
$standby->wait_for_log(qr/workflows launcher started/, $log_offset);
pass('the promoted node logs the launcher start');

# Every acknowledged create is there.
my $ids_sql = join(',', map { "('$_')" } sort keys %acked);
is( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM (VALUES $ids_sql) a(id) WHERE NOT EXISTS (SELECT 1 FROM workflows.instances i WHERE i.id = a.id)"
	),
	'0',
	'every acknowledged create exists on the promoted node');

# Every step the primary reported complete is complete, with its effect.
my $complete_sql = join(',',
	map { my ($i, $k) = split m{/}, $_, 2; "('$i','$k')" } @complete_before);
check_still_complete($standby, 'postgres',
	'no step acknowledged complete on the primary is lost on the promoted node', @complete_before);
is( $standby->safe_psql(
		'postgres', qq{
SELECT count(*) FROM (VALUES $complete_sql) c(instance_id, key)
  JOIN workflows.steps s USING (instance_id, key)
 WHERE s.type = 'step'
   AND NOT EXISTS (SELECT 1 FROM effects e WHERE e.instance = c.instance_id AND e.step = c.key)
}),
	'0',
	'every step acknowledged complete on the primary has its effect on the promoted node');

# Events acknowledged before the stop are there, undelivered or delivered.
is( $standby->safe_psql('postgres',
		"SELECT count(*) FROM workflows.events WHERE type = 'go'"),
	$nev / 2, 'the events sent before the stop survived the failover');

# The other listeners get their events on the promoted node.
$sql = "BEGIN;\n";
$sql .= "SELECT workflows.send_event('$_', 'go', '{\"sent\": \"after\"}');\n"
  for @evs[ $nev / 2 .. $nev - 1 ];
$sql .= "COMMIT;\n";
$standby->safe_psql('postgres', $sql);

# ---------------------------------------------------------------------------
# Everything completes.
# ---------------------------------------------------------------------------
my $total = scalar(keys %acked);
$standby->poll_query_until(
	'postgres', q{
SELECT count(*) FROM workflows.instances WHERE status IN ('complete', 'errored', 'terminated')
}, $total)
  or die 'the instances did not all finish on the promoted node';
is( $standby->safe_psql(
		'postgres', "SELECT status, count(*) FROM workflows.instances GROUP BY status"),
	"complete|$total", "all $total instances complete on the promoted node");

check_invariant($standby, 'postgres', 'after the failover', \%acked, qr/^(nap|go)$/);

# outputs
is( $standby->safe_psql('postgres',
		"SELECT count(*) FROM workflows.instances WHERE id LIKE 'w-%' AND output = '{\"total\": 5}'"),
	$nbatch, 'every batch instance returned its five step outputs');
is( $standby->safe_psql(
		'postgres',
		"SELECT string_agg(id || '=' || (output->>'sent'), ',' ORDER BY id) FROM workflows.instances WHERE id LIKE 'ev-%'"
	),
	join(',',
		(map { "$_=before" } @evs[ 0 .. $nev / 2 - 1 ]),
		(map { "$_=after" } @evs[ $nev / 2 .. $nev - 1 ])),
	'each listener got its own event, sent before or after the failover');

# Sleepers: the long ones slept through the failover and woke at their time
# on the promoted node, plus a few seconds; the short ones, due around the
# failover, woke once executors were back (their queue position behind the
# batch is not a failover matter, so only their completion is checked).
my %after_start;
for my $line (split /\n/,
	$standby->safe_psql('postgres',
		"SELECT instance_id, extract(epoch FROM started_at) FROM workflows.steps WHERE key = 'after' AND type = 'step'"))
{
	my ($id, $t) = split /\|/, $line;
	$after_start{$id} = $t;
}
# Executors claim due instances oldest wake time first, so a sleeper whose
# time comes while batch instances (all due since their creation) still
# wait takes its turn after them: on a slow machine the batch can outlast
# the nap.  So each must start no earlier than its time and within 5 s of
# the latest of its time, the executors' start and the batch's end (a lost
# wake-up waits for the 10 s poll).
my $batch_done = $standby->safe_psql('postgres',
	"SELECT extract(epoch FROM max(ended_at)) FROM workflows.instances WHERE id LIKE 'w-%'");
for my $id (@naps)
{
	my $due = $nap_end{$id};
	$due = $executors_up if $executors_up > $due;
	$due = $batch_done if $batch_done > $due;
	my $late = $after_start{$id} - $due;
	note sprintf('%s: nap ended %.1f s after the executors were up, %.1f s after the batch ended; woke %.2f s after its time',
		$id, $nap_end{$id} - $executors_up, $nap_end{$id} - $batch_done,
		$after_start{$id} - $nap_end{$id});
	ok($after_start{$id} >= $nap_end{$id} && $late < 5,
		sprintf('%s woke at its time on the promoted node, or at its turn (+%.2f s)', $id, $late));
}
for my $id (@shorts)
{
	ok($after_start{$id} >= $nap_end{$id}, "$id did not wake before its time");
}

# attempts: only interruptions (by the crash) may have failed
is( $standby->safe_psql('postgres',
		"SELECT count(*) FROM workflows.attempts WHERE NOT success AND error->>'sqlstate' IS DISTINCT FROM 'WF008' AND error->>'sqlstate' IS DISTINCT FROM '57P01'"),
	'0', 'no attempt failed');

$standby->stop;
note sprintf('006_failover took %.1f s', time - $started);
done_testing();

