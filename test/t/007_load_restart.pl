# 007_load_restart.pl
#
# Load, then an immediate stop in the middle of it.
#
# (a) 1,000 instances of five steps, created with create_batch; each step
#     writes an effect row (instance, step) into a table with no unique
#     constraint, and takes 2 ms (without it the executors finished all of
#     them before the stop could land in the middle).  When about a third of the instances are complete the
#     server is stopped with "immediate" (no shutdown checkpoint, backends
#     killed mid-step) and started again.  Every acknowledged instance must
#     complete within a bounded time, every step that was complete before
#     the stop must still be, and every step's effect must be there exactly
#     once, with its memo.
#
# (b) A long-running open transaction elsewhere (it holds back xmin, so
#     nothing the executors update can be vacuumed) during a load of 300
#     instances: all of them complete, with the same invariant; then the
#     transaction commits.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WorkflowsInvariant;
use JSON::PP;
use Time::HiRes qw(time);

my $started = time;

my $nload = 1000;
my $nheld = 300;
my @keys = map { "s$_" } 1 .. 5;

my $node = PostgreSQL::Test::Cluster->new('load_restart');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor'",
	'2')
  or die 'executors did not start';

$node->safe_psql(
	'postgres', q{
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);

CREATE FUNCTION five_steps(event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    total int := 0;
BEGIN
    FOR i IN 1 .. 5 LOOP
        total := total + (workflows.step('s' || i,
            'INSERT INTO public.effects SELECT $1::text, $2::text FROM pg_sleep(0.002) RETURNING 1',
            jsonb_build_array(id, 's' || i)))::int;
    END LOOP;
    RETURN jsonb_build_object('total', total);
END
$$;
SELECT workflows.register('five_steps', 'five_steps(jsonb)');
});

# ---------------------------------------------------------------------------
# (a) 1,000 instances, immediate stop when about a third are complete
# ---------------------------------------------------------------------------
my %acked;
my @load = map { sprintf('load-%04d', $_) } 1 .. $nload;
my $t0 = time;
my $created = create_batch($node, \@load);
is($created, join(',', @load), "create_batch acknowledged $nload instances");
$acked{$_} = [@keys] for @load;

my $third = int($nload / 3);
$node->poll_query_until('postgres',
	"SELECT count(*) >= $third FROM workflows.instances WHERE status = 'complete'")
  or die 'the load made no progress';
my $t_third = time;

# what is complete right before the stop
my $complete_before = $node->safe_psql(
	'postgres', q{
SELECT string_agg(instance_id || '/' || key, ',')
  FROM workflows.steps WHERE status = 'complete'
});
my $done_before = $node->safe_psql('postgres',
	"SELECT count(*) FROM workflows.instances WHERE status = 'complete'");
note sprintf('%d instances complete %.1f s after create_batch; stopping',
	$done_before, $t_third - $t0);
$node->stop('immediate');
ok($done_before < $nload, 'stopped with instances still to run');

# The executors' crash files (pg_workflows/, one per executor, written
# before each attempt): a kill between creating the file and writing it
# leaves an empty one.
my $unreadable = unreadable_crash_files($node);
{
	my $dir = $node->data_dir . '/pg_workflows';
	opendir(my $dh, $dir) or die "cannot open $dir: $!";
	note 'crash files at the stop: '
	  . (join(' ', map { "$_=" . (-s "$dir/$_") } sort grep { !/^\./ } readdir $dh)
		  || 'none');
	closedir $dh;
}
note "the stop left unreadable crash files: $unreadable" if $unreadable;
my $log_offset = -s $node->logfile;
$node->start;

my @complete_before = split /,/, $complete_before;
check_still_complete($node, 'postgres',
	'after the restart: every step complete before the stop still is', @complete_before);

# an unreadable crash file is ignored (part (c) below).  The same bound
# either way: the rest of the load takes its time on a slow machine, and
# executors that fail on the file never finish at all.
my $elapsed = wait_all_final($node, scalar(keys %acked), 120);
ok(defined $elapsed, "all $nload instances finish after the restart");
if (!defined $elapsed)
{
	if (slurp_file($node->logfile, $log_offset) =~
		/invalid input syntax for type json/)
	{
		# work around the bug, so that the rest of the test means something
		note '(bug) the executors fail reading the empty crash file; '
		  . 'removing the unreadable crash files by hand';
		remove_unreadable_crash_files($node);
	}
	$elapsed = wait_all_final($node, scalar(keys %acked), 120);
	ok(defined $elapsed, "all $nload instances finish in the end");
}
note sprintf('the rest of the load took %.1f s after the restart', $elapsed // -1);

check_invariant($node, 'postgres', '(a) after the immediate stop', \%acked);
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.instances WHERE output = '{\"total\": 5}'"),
	$nload, 'every instance returned its five step outputs');
my ($interrupted, $other_failures) = split /\|/,
  $node->safe_psql(
	'postgres', q{
SELECT count(*) FILTER (WHERE error->>'sqlstate' IN ('WF008', '57P01')),
       count(*) FILTER (WHERE error->>'sqlstate' NOT IN ('WF008', '57P01') OR error->>'sqlstate' IS NULL)
  FROM workflows.attempts WHERE NOT success
});
note "attempts recorded as interrupted by the stop: $interrupted";
ok($interrupted <= 2, 'at most one interrupted attempt per executor');
is($other_failures, '0', 'no attempt failed otherwise');

# ---------------------------------------------------------------------------
# (b) a transaction held open elsewhere during a load of 300 instances
# ---------------------------------------------------------------------------
my $holder = $node->background_psql('postgres');
# REPEATABLE READ: the session keeps its snapshot (backend_xmin) as well as
# its xid between statements
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
my $xid = $holder->query_safe('SELECT txid_current()');
like($xid, qr/^\d+$/, "a transaction holds xid $xid open");
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');

my @held = map { sprintf('held-%04d', $_) } 1 .. $nheld;
$created = create_batch($node, \@held);
is($created, join(',', @held), "create_batch acknowledged $nheld more instances");
$acked{$_} = [@keys] for @held;

# one of them waited for by wait() while the transaction is still open
is( $node->safe_psql('postgres',
		"SELECT workflows.wait('held-0001', '30 seconds')->>'status'"),
	'complete', 'wait() returns while the old transaction is open');

$elapsed = wait_all_final($node, scalar(keys %acked), 60);
ok(defined $elapsed, "all $nheld instances finish while the transaction is open");
note sprintf('the held-xmin load took %.1f s', $elapsed // -1);

is( $node->safe_psql(
		'postgres',
		"SELECT state, backend_xid, backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = $holder_pid"
	),
	"idle in transaction|$xid|t",
	'the old transaction was open and held xmin all along');

check_invariant($node, 'postgres', '(b) with xmin held back', \%acked);

$holder->query_safe('COMMIT');
$holder->quit;
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $holder_pid AND state = 'idle in transaction'"),
	'0', 'the old transaction committed');

# the executors carry on after it
$node->safe_psql('postgres', "SELECT workflows.create('five_steps', '{}', 'after-commit')");
is( $node->safe_psql('postgres',
		"SELECT workflows.wait('after-commit', '60 seconds')->>'status'"),
	'complete', 'an instance created afterwards completes');
$acked{'after-commit'} = [@keys];
check_invariant($node, 'postgres', '(b) after the commit', \%acked);

# ---------------------------------------------------------------------------
# (c) An empty crash file (as an operating system crash could leave, the
# files not being fsynced) must not stop the executors: it is reported and
# ignored.  (Crash files were once created and then written, so an
# immediate stop between the two left an empty file and every executor of
# the database failed at each start.)  A clean stop removes the file.
# ---------------------------------------------------------------------------
my $dboid = $node->safe_psql('postgres',
	"SELECT oid FROM pg_database WHERE datname = 'postgres'");
$node->stop;
# (named after the slot and its generation; an empty file of the name 0.1
# used, without the generation, is read at start like any other)
my @left = glob($node->data_dir . "/pg_workflows/executor_${dboid}_*");
ok(!@left, 'a clean stop leaves no crash file') or diag "@left";
my $crash_file = $node->data_dir . "/pg_workflows/executor_${dboid}_0";
open(my $fh, '>', $crash_file) or die "cannot create $crash_file: $!";
close($fh);
$log_offset = -s $node->logfile;
$node->start;
$node->safe_psql('postgres', "SELECT workflows.create('five_steps', '{}', 'after-empty-file')");
$acked{'after-empty-file'} = [@keys];
# (executors that failed on the file would never run it: a bound for a slow
# machine, not a tight one)
my $status = $node->safe_psql('postgres',
	"SELECT workflows.wait('after-empty-file', '60 seconds')->>'status'");
is($status, 'complete',
	'an instance completes after a start that finds an empty crash file');
ok( slurp_file($node->logfile, $log_offset) !~
	  /invalid input syntax for type json/,
	'the executors do not fail on the empty crash file');
like(slurp_file($node->logfile, $log_offset),
	qr/ignoring unreadable crash file/, 'the unreadable crash file is reported and ignored');
if ($status ne 'complete')
{
	note 'removing the empty crash file by hand';
	remove_unreadable_crash_files($node);
	is( $node->safe_psql('postgres',
			"SELECT workflows.wait('after-empty-file', '60 seconds')->>'status'"),
		'complete', 'the instance completes once the file is removed');
}
check_invariant($node, 'postgres', '(c) after the empty crash file', \%acked);

$node->stop;
note sprintf('007_load_restart took %.1f s', time - $started);
done_testing();

# ---------------------------------------------------------------------------

# crash files that are empty or not JSON, as "name=size" (empty string: none)
sub unreadable_crash_files
{
	my ($node) = @_;
	my $dir = $node->data_dir . '/pg_workflows';
	my @bad;
	opendir(my $dh, $dir) or return '';
	for my $f (sort grep { !/^\./ } readdir $dh)
	{
		my $text = slurp_file("$dir/$f");
		push @bad, "$f=" . length($text)
		  unless eval { decode_json($text); 1 };
	}
	closedir $dh;
	return join(' ', @bad);
}

sub remove_unreadable_crash_files
{
	my ($node) = @_;
	my $dir = $node->data_dir . '/pg_workflows';
	for my $f (split / /, unreadable_crash_files($node))
	{
		$f =~ s/=\d+$//;
		unlink("$dir/$f") or die "cannot remove $dir/$f: $!";
	}
	return;
}

# create_batch of the given ids; returns the ids it acknowledged, in order
sub create_batch
{
	my ($node, $ids) = @_;
	my $json = encode_json([ map { { id => $_, params => {} } } @$ids ]);
	return $node->safe_psql('postgres',
		"SELECT string_agg(id, ',') FROM workflows.create_batch('five_steps', '$json') id"
	);
}

# wait until $n instances are final; returns the seconds it took, or undef
# after $timeout seconds
sub wait_all_final
{
	my ($node, $n, $timeout) = @_;
	my $t = time;
	while (time - $t < $timeout)
	{
		my $final = $node->safe_psql('postgres',
			"SELECT count(*) FROM workflows.instances WHERE status IN ('complete', 'errored', 'terminated')"
		);
		return time - $t if $final >= $n;
		select(undef, undef, undef, 0.25);
	}
	diag $node->safe_psql('postgres',
		'SELECT status, count(*) FROM workflows.instances GROUP BY status');
	return undef;
}

