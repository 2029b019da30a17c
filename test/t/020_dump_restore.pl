# 020_dump_restore.pl
#
# Backups: pg_dump of a database with live instances, restored (in one
# transaction) into another database, carries on there.
#
# The dump is taken while executors run: instances that finished, that
# sleep past the restore, that wait for an event (one already sent and
# kept), that are paused.  The original database is dropped right after
# the dump (what a move or a restore after a loss looks like).  In the
# restored database the executors start when the restore commits and every
# instance completes, every step effect exactly once; events sent after the
# restore are numbered after the restored ones, and audit rows after the
# restored ones (the identity sequences' positions are part of the dump).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WorkflowsInvariant;
use Time::HiRes qw(time);

my $started = time;

my $node = PostgreSQL::Test::Cluster->new('dump_restore');
$node->init;
# Two executors: in a restored database the workflow functions have new
# OIDs, so the engine pins a copy of each (workflows_code) when an instance
# of its version first runs -- both executors at once, one after the other.
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql(
	'shop', q{
CREATE EXTENSION workflows;
CREATE TABLE effects (instance text NOT NULL, step text NOT NULL);

CREATE FUNCTION flow(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    id text := event->>'instanceId';
    ev jsonb;
BEGIN
    PERFORM workflows.step('one',
        'INSERT INTO public.effects VALUES ($1::text, ''one'')', jsonb_build_array(id));
    IF event->'payload' ? 'nap' THEN
        PERFORM workflows.sleep('nap', make_interval(secs => (event->'payload'->>'nap')::float8));
    END IF;
    IF event->'payload' ? 'events' THEN
        FOR i IN 1 .. (event->'payload'->>'events')::int LOOP
            ev := workflows.wait_for_event('go' || i, 'go', '10 minutes');
        END LOOP;
    END IF;
    PERFORM workflows.step('two',
        'INSERT INTO public.effects VALUES ($1::text, ''two'')', jsonb_build_array(id));
    RETURN ev;
END $$;
SELECT workflows.register('flow', 'flow(jsonb)');
});
$node->poll_query_until('shop',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'shop'",
	'2')
  or die 'executors did not start';

my $nap = 6;
$node->safe_psql(
	'shop', qq{
SELECT workflows.create('flow', '{}', 'done-' || g) FROM generate_series(1, 20) g;
SELECT workflows.create('flow', '{"nap": $nap}', 'nap-' || g) FROM generate_series(1, 5) g;
SELECT workflows.create('flow', '{"events": 2}', 'ev-' || g) FROM generate_series(1, 5) g;
SELECT workflows.create('flow', '{"events": 1}', 'paused');
});
$node->poll_query_until(
	'shop', q{
SELECT count(*) = 0 FROM workflows.instances WHERE status IN ('queued', 'running')
})
  or die 'the instances did not settle';
is($node->safe_psql('shop', "SELECT workflows.pause('paused')"), 'paused', 'one instance paused');
# one event each, kept or taken before the dump; the second comes after
$node->safe_psql('shop',
	"SELECT workflows.send_event('ev-' || i, 'go', jsonb_build_object('n', 1)) FROM generate_series(1, 5) i");
$node->safe_psql('shop', "SELECT workflows.send_event('paused', 'go', '{\"n\": 1}')");
my %nap_end = map { split /\|/ } split /\n/, $node->safe_psql('shop',
	"SELECT instance_id, extract(epoch FROM wake_at) FROM workflows.steps WHERE key = 'nap'");
is(scalar(keys %nap_end), 5, 'five instances sleep at the time of the dump');
my $before = $node->safe_psql('shop',
	"SELECT status, count(*) FROM workflows.instances GROUP BY 1 ORDER BY 1");
note "at the dump:\n$before";

my $dump = $PostgreSQL::Test::Utils::tmp_check . '/shop.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', 'shop' ],
	'pg_dump while the executors run');
$node->safe_psql('postgres', 'DROP DATABASE shop WITH (FORCE)');

$node->safe_psql('postgres', 'CREATE DATABASE shop_restored');
$node->command_ok(
	[ 'pg_restore', '--single-transaction', '--exit-on-error', '-d', 'shop_restored', $dump ],
	'pg_restore in one transaction');
$node->poll_query_until('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'workflows executor' AND datname = 'shop_restored'",
	'2')
  or die 'executors did not start in the restored database';
pass('executors start in the restored database');

# the second event for each waiter, the event of the paused one kept
$node->safe_psql('shop_restored',
	"SELECT workflows.send_event('ev-' || i, 'go', jsonb_build_object('n', 2)) FROM generate_series(1, 5) i");
like($node->safe_psql('shop_restored', "SELECT workflows.resume('paused')"),
	qr/^(running|queued)$/, 'the paused instance resumes after the restore');
$node->poll_query_until('shop_restored',
	"SELECT count(*) FROM workflows.instances WHERE status <> 'complete'", '0')
  or die 'the restored instances did not complete';
pass('every restored instance completes');

my %acked;
$acked{"done-$_"} = [qw(one two)] for 1 .. 20;
$acked{"nap-$_"} = [qw(one nap two)] for 1 .. 5;
$acked{"ev-$_"} = [qw(one go1 go2 two)] for 1 .. 5;
$acked{paused} = [qw(one go1 two)];
check_invariant($node, 'shop_restored', 'after the restore', \%acked, qr/^(nap|go\d)$/);

is( $node->safe_psql('shop_restored',
		"SELECT string_agg(DISTINCT output->'payload'->>'n', ',') FROM workflows.instances WHERE id LIKE 'ev-%'"),
	'2', 'each waiter took the event sent before the dump, then the one sent after');
is( $node->safe_psql('shop_restored',
		"SELECT count(*) FROM (SELECT instance_id, seq FROM workflows.events GROUP BY 1, 2 HAVING count(*) > 1) d"),
	'0', 'events sent after the restore are numbered after the restored ones');
is( $node->safe_psql('shop_restored',
		"SELECT count(*) FROM workflows.audit WHERE action = 'send_event'"),
	'11', 'audit rows of before and after the restore');
for my $id (sort keys %nap_end)
{
	my $woke = $node->safe_psql('shop_restored',
		"SELECT extract(epoch FROM started_at) FROM workflows.steps WHERE instance_id = '$id' AND key = 'two'");
	ok($woke >= $nap_end{$id}, "$id did not wake before its time");
}

$node->stop;
note sprintf('020_dump_restore took %.1f s', time - $started);
done_testing();
