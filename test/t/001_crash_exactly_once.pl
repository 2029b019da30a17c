# 001_crash_exactly_once.pl
#
# Kill an executor with SIGKILL while a step is blocked in the middle of its
# transaction.  The postmaster answers with a crash-restart of the whole
# server; afterwards every instance must finish, and every step that writes
# into a user table must have written exactly once: the killed attempt's
# writes rolled back together with its memo, and the steps that had already
# committed are answered from their memo on replay, not run again.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('crash_exactly_once');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
# Cluster.pm turns this off; this test is about the crash-restart
restart_after_crash = on
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');

# executors are up
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
	'2')
  or die 'executors did not start';

# Three steps, each writes one row.  Step two first waits for advisory lock
# 42, which the test holds, so the executor blocks inside the step's
# transaction after step one committed.
$node->safe_psql(
	'postgres', q{
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);

CREATE FUNCTION three_steps(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    a jsonb;
    b jsonb;
    c jsonb;
BEGIN
    a := workflows.step('one',
        'INSERT INTO public.effects VALUES ($1::text, ''one'') RETURNING 1',
        jsonb_build_array(id));
    b := workflows.step('two',
        'WITH l AS (SELECT pg_advisory_xact_lock(42)) '
        'INSERT INTO public.effects SELECT $1::text, ''two'' FROM l RETURNING 2',
        jsonb_build_array(id));
    c := workflows.step('three',
        'INSERT INTO public.effects VALUES ($1::text, ''three'') RETURNING 3',
        jsonb_build_array(id));
    RETURN jsonb_build_object('a', a, 'b', b, 'c', c);
END
$$;

SELECT workflows.register('three_steps', 'three_steps(jsonb)');
});

# Hold the lock in a session of our own.
my $locker = $node->background_psql('postgres');
$locker->query_safe('SELECT pg_advisory_lock(42)');

my $ninstances = 5;
my @ids;
for my $i (1 .. $ninstances)
{
	push @ids,
	  $node->safe_psql('postgres',
		"SELECT workflows.create('three_steps', '{\"n\": $i}', 'crash-$i')");
}
is_deeply(\@ids, [ map { "crash-$_" } 1 .. $ninstances ],
	'instances created with the ids asked for');

# Both executors end up blocked on the lock in step two of an instance each
# (each holds its instance row, so the other executor takes another one).
$node->poll_query_until(
	'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'workflows executor'
   AND wait_event_type = 'Lock' AND wait_event = 'advisory'
}, '2')
  or die 'executors did not block on the advisory lock';

# Before the crash: step two has not committed anywhere, and the effects
# match the memos exactly.  (Step one of the blocked instances is not
# committed either: step two runs in place after it, in the same
# transaction -- see "Steps run in place" in the README -- unless an
# executor lost its instance to the other between two ticks.)
my $memo_vs_effects = q{
SELECT (SELECT count(*) FROM (
           SELECT instance, step FROM effects
           EXCEPT ALL
           SELECT instance_id, key FROM workflows.steps WHERE status = 'complete') a)
    || '/' ||
       (SELECT count(*) FROM (
           SELECT instance_id, key FROM workflows.steps WHERE status = 'complete'
           EXCEPT ALL
           SELECT instance, step FROM effects) b)
};
my ($ones, $others) = split /\|/, $node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE step = 'one'), count(*) FILTER (WHERE step <> 'one') FROM effects");
ok($ones <= $ninstances, "before the crash: step one done by $ones instances");
is($others, '0', 'before the crash: step two and three done by none');
is($node->safe_psql('postgres', $memo_vs_effects), '0/0',
	'before the crash: an effect for every complete step memo and nothing else');

my $victim = $node->safe_psql(
	'postgres', q{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'workflows executor'
   AND wait_event_type = 'Lock' AND wait_event = 'advisory'
 ORDER BY pid LIMIT 1
});
like($victim, qr/^\d+$/, 'found the pid of a blocked executor');

my $log_offset = -s $node->logfile;
ok(kill('KILL', $victim), "sent SIGKILL to executor $victim");

# The postmaster notices the dead child, kills every backend (our lock
# holder too: that releases the lock) and reinitializes.
$node->wait_for_log(qr/all server processes terminated; reinitializing/,
	$log_offset);
$node->poll_query_until('postgres', 'SELECT 1', '1')
  or die 'server did not come back after the crash';
ok(1, 'server is back after the crash-restart');

like(
	slurp_file($node->logfile, $log_offset),
	qr/\Q(PID $victim) was terminated by signal 9\E/,
	'the server log shows the executor killed by signal 9');

# The lock holder's backend was killed by the crash-restart: its session
# lock is gone.  Close the psql client (its connection is dead).
eval { $locker->quit; };
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
	'0',
	'the advisory lock was released by the crash-restart');

# Every instance finishes.
$node->poll_query_until(
	'postgres', q{
SELECT count(*) FROM workflows.instances
 WHERE status IN ('complete', 'errored', 'terminated')
}, $ninstances)
  or die 'instances did not finish after the crash';

is( $node->safe_psql(
		'postgres',
		"SELECT status, count(*) FROM workflows.instances GROUP BY status"),
	"complete|$ninstances",
	'every instance is complete');

# Exactly once: one row per (instance, step), 15 in all.
is($node->safe_psql('postgres', 'SELECT count(*) FROM effects'),
	3 * $ninstances, 'exactly 3 effects per instance in all');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
    SELECT instance, step FROM effects GROUP BY instance, step HAVING count(*) <> 1
) dup
}),
	'0',
	'no step of any instance wrote twice');
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(instance || ':' || step, ',' ORDER BY instance, step)
  FROM effects
}),
	join(',',
		map { ("crash-$_:one", "crash-$_:three", "crash-$_:two") }
		  1 .. $ninstances),
	'each instance wrote one, two and three once each');

is($node->safe_psql('postgres', $memo_vs_effects), '0/0',
	'after the crash: an effect for every complete step memo and nothing else');

# Each instance's status document: three complete steps, one successful
# attempt each, the memoized outputs, and the function's output.
for my $id (@ids)
{
	my $doc = decode_json(
		$node->safe_psql('postgres', "SELECT workflows.status('$id')"));
	is($doc->{status}, 'complete', "$id: status complete");
	is_deeply($doc->{output}, { a => 1, b => 2, c => 3 }, "$id: output");
	my @steps = @{ $doc->{steps} };
	is(scalar(@steps), 3, "$id: three steps");
	is(join(',', map { $_->{name} } @steps), 'one,two,three',
		"$id: steps in order");
	is(join(',', map { $_->{status} } @steps), 'complete,complete,complete',
		"$id: every step complete");
	is(join(',', map { $_->{output} } @steps), '1,2,3',
		"$id: step outputs");
	is( join(',',
			map { scalar(grep { $_->{success} } @{ $_->{attempts} }) } @steps),
		'1,1,1',
		"$id: exactly one successful attempt per step");
}

# the attempts running at the crash are recorded as interrupted: WF008 for
# the killed executor's, 57P01 (a stop, not its fault) for the other's;
# nothing else failed
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.attempts WHERE NOT success AND error->>'sqlstate' NOT IN ('WF008', '57P01')"),
	'0',
	'no attempt failed but the interrupted one');
# the crash restart ends every backend: both executors were inside a step
ok( $node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.attempts WHERE NOT success") <= 2,
	'at most the two attempts running at the crash are recorded as interrupted');

$node->stop;
note sprintf('001_crash_exactly_once took %.1f s', time - $started);
done_testing();
