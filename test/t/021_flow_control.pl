# 021_flow_control.pl
#
# Flow control under several executors and several creating sessions
# (issue 14), proven from what the instances themselves recorded:
#
#  - exact limit: 4 executors, a concurrency limit of 2, 60 instances
#    created by 3 sessions at once; the instances' own start and end times
#    (clock_timestamp() written by their steps) never overlap more than 2
#    at once -- and do reach 2, so the limit is what bounds them;
#  - a slot freed by a commit is taken at once (wake at commit): with
#    workflows.poll_interval at 60 s, the next instance starts within a
#    second of the previous one's end;
#  - fairness: 2,000 queued instances of key "a" under a per-key limit of 2
#    do not starve 10 instances of key "b" created after them: b's all
#    finish while most of a's backlog still waits;
#  - held-back instances are not polled: with 2,000 held back, the
#    executors' claim finds nothing due (the rows have no wake time).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('flow');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 4
workflows.poll_interval = 60000
max_worker_processes = 16
max_connections = 40
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION workflows;
CREATE TABLE ran (id text PRIMARY KEY, k text, started timestamptz, ended timestamptz);
CREATE FUNCTION rec_start(a jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO ran VALUES (a->>'id', a->>'k', clock_timestamp(), NULL);
    SELECT pg_sleep((a->>'s')::float8);
    SELECT '1'::jsonb $$;
CREATE FUNCTION rec_end(a jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT pg_sleep((a->>'s')::float8);
    UPDATE ran SET ended = clock_timestamp() WHERE id = a->>'id';
    SELECT '1'::jsonb $$;
CREATE FUNCTION job(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a jsonb := jsonb_build_object('id', event->>'instanceId', 'k', event->'payload'->>'k',
                                  's', COALESCE(event->'payload'->>'s', '0.02'));
BEGIN
    PERFORM workflows.step('start', 'rec_start(jsonb)'::regprocedure, a);
    PERFORM workflows.step('end', 'rec_end(jsonb)'::regprocedure, a);
    RETURN '1';
END $$;
SELECT workflows.register('limited', 'job(jsonb)');
SELECT workflows.set_flow_control('limited', '{"concurrency": {"limit": 2}}');
SELECT workflows.register('perkey', 'job(jsonb)');
SELECT workflows.set_flow_control('perkey', '{"concurrency": {"limit": 2, "key": "$.k"}}');
});

# the most instances (ids LIKE a pattern) that ran at once, from their
# recorded times (one still running counts until now)
sub max_overlap
{
	my ($like) = @_;
	return $node->safe_psql(
		'postgres', qq{
SELECT COALESCE(max(n), 0) FROM (
    SELECT (SELECT count(*) FROM ran b WHERE b.id LIKE '$like' AND b.started <= a.started
                                      AND COALESCE(b.ended, 'infinity') > a.started) AS n
      FROM ran a WHERE a.id LIKE '$like') x});
}

# ---- exact limit: 3 creating sessions, 4 executors, limit 2 ----
my @sessions = map { $node->background_psql('postgres') } 1 .. 3;
for my $i (0 .. 2)
{
	$sessions[$i]->query_safe(
		"SELECT workflows.create('limited', jsonb_build_object('k', 'x', 's', 0.03), 'lim-$i-' || g) "
		  . "FROM generate_series(1, 20) g");
}
$_->quit for @sessions;
$node->poll_query_until('postgres',
	"SELECT count(*) = 60 FROM workflows.instances WHERE workflow = 'limited' AND status = 'complete'")
  or die 'the limited instances did not finish';
is($node->safe_psql('postgres', "SELECT count(*) FROM ran WHERE id LIKE 'lim-%' AND ended IS NOT NULL"),
	'60', 'every limited instance recorded its start and end once');
my $overlap = max_overlap('lim-%');
is($overlap, '2', 'never more than 2 ran at once under 4 executors, and 2 did (the limit binds)');

# ---- a slot freed at commit is taken at once, with polling at 60 s ----
my $gap = $node->safe_psql(
	'postgres', q{
SELECT max(gap) FROM (
    SELECT extract(epoch FROM started - lag(ended) OVER (ORDER BY started)) AS gap,
           row_number() OVER (ORDER BY started) AS r
      FROM (SELECT * FROM ran WHERE id LIKE 'lim-%' ORDER BY started) s) x
 WHERE r > 2});
# (polling would leave a gap of up to a minute; 10 s leaves room for a
# loaded machine)
cmp_ok($gap, '<', 10, "a freed slot is taken without polling (largest start-after-end gap ${gap}s)");

# ---- fairness: 2,000 of key a, then 10 of key b, limit 2 per key ----
$node->safe_psql(
	'postgres', q{
SELECT count(*) FROM workflows.create_batch('perkey',
    (SELECT jsonb_agg(jsonb_build_object('id', 'a-' || g, 'params', jsonb_build_object('k', 'a', 's', 0.02)))
       FROM generate_series(1, 2000) g));
});
$node->safe_psql(
	'postgres', q{
SELECT count(*) FROM workflows.create_batch('perkey',
    (SELECT jsonb_agg(jsonb_build_object('id', 'b-' || g, 'params', jsonb_build_object('k', 'b', 's', 0.02)))
       FROM generate_series(1, 10) g));
});
my $t0 = time();
$node->poll_query_until('postgres',
	"SELECT count(*) = 10 FROM workflows.instances WHERE id LIKE 'b-%' AND status = 'complete'")
  or die 'the instances of key b did not finish';
my $b_secs = time() - $t0;
my $a_done = $node->safe_psql('postgres',
	"SELECT count(*) FROM workflows.instances WHERE id LIKE 'a-%' AND status = 'complete'");
diag(sprintf('key b: 10 instances done in %.1f s, while key a had %d of 2000 done', $b_secs, $a_done));
cmp_ok($a_done, '<', 1000, "key b finished long before key a's backlog drained ($a_done of 2000 done)");
is(max_overlap('a-%'), '2', 'key a ran 2 at a time');
is(max_overlap('b-%'), '2', 'key b ran 2 at a time, beside key a');

# ---- held-back instances are out of the runnable index ----
$node->poll_query_until('postgres',
	"SELECT count(*) > 1000 FROM workflows.flow_members WHERE state = 'held'")
  or die 'the backlog of key a was not held back';
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM workflows.flow_members f JOIN workflows.instances i ON i.id = f.instance_id
 WHERE f.state = 'held' AND i.wake_at IS NOT NULL}),
	'0', 'held-back instances have no wake time: no executor polls them');
like($node->safe_psql('postgres',
		"SELECT workflows.status(instance_id)->>'heldBack' FROM workflows.flow_members WHERE state = 'held' LIMIT 1"),
	qr/^waiting for a concurrency slot — key "a": 2 of 2 running$/, 'status() says why it is held back');

$node->stop('immediate');
done_testing();
