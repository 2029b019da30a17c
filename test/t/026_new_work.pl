# 026_new_work.pl
#
# A new instance wakes one idle executor, not all of them, and no wake-up
# is lost.  With the fallback poll at an hour, an instance whose wake-up
# was lost would wait until an executor looks on its own (when it flushes
# its statistics, seconds later), instead of milliseconds: each instance
# below must end within 5 s, each delayed one start within 2 s of its time.
#
# 1. One client, one instance at a time, each waited for: every one starts
#    at once, whichever of the three executors sleeps.
# 2. Instances that start later (options.delay): the executor woken for
#    them plans its sleep for their time.
# 3. Clients creating singles and batches while the executors are busy
#    with slower instances (an executor woken for a new instance that finds
#    other work first hands the wake-up on): everything created ends.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('new_work');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 3
workflows.poll_interval = '1h'
max_worker_processes = 16
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION workflows;
CREATE FUNCTION one(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('only', 'SELECT $1::int + 1', jsonb_build_array(coalesce(event->'payload'->>'n', '0')));
END
$$;
SELECT workflows.register('one', 'one(jsonb)');
CREATE FUNCTION slowish(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM workflows.step('a', 'SELECT pg_sleep(0.005)');
    PERFORM workflows.step('b', 'SELECT pg_sleep(0.005)');
    RETURN '1';
END
$$;
SELECT workflows.register('slowish', 'slowish(jsonb)');
-- one at a time: create, commit, wait
CREATE PROCEDURE one_by_one(n int, opts jsonb, pause float8) LANGUAGE plpgsql AS $$
DECLARE
    iid text;
BEGIN
    FOR i IN 1..n LOOP
        iid := workflows.create('one', jsonb_build_object('n', i), options => opts);
        COMMIT;
        IF workflows.wait(iid, '5 s')->>'status' IS DISTINCT FROM 'complete' THEN
            RAISE EXCEPTION 'instance % (number %) did not complete within 5 s', iid, i;
        END IF;
        COMMIT;
        PERFORM pg_sleep(pause * random());
    END LOOP;
END
$$;
});

# the executors start, and go idle
$node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM workflows.executors WHERE pid IS NOT NULL")
  or die "executors did not start";

# 1. one at a time, sometimes right away, sometimes after the executors slept
$node->safe_psql('postgres', "CALL one_by_one(300, NULL, 0.005)");
pass('300 instances created one at a time each ended within 5 s (the poll is an hour)');

# 2. delayed starts: the executor woken for each plans its sleep for it
$node->safe_psql('postgres', q{CALL one_by_one(10, '{"delay": "200 ms"}', 0.1)});
my $late = $node->safe_psql('postgres', q{
SELECT count(*) FROM workflows.instances
 WHERE params ? 'n' AND started_at - created_at > interval '2.2 s'});
is($late, '0', 'instances with a delay of 200 ms all started within 2 s of it');

# 3. clients creating singles and batches while the executors are busy
my $script = $node->basedir . '/create.sql';
open(my $fh, '>', $script) or die $!;
print $fh q{\set r random(1, 10)
SELECT CASE WHEN :r <= 3 THEN (SELECT count(*) FROM workflows.create_batch('one',
           (SELECT jsonb_agg('{"params": {}}'::jsonb) FROM generate_series(1, :r))))
       WHEN :r <= 6 THEN length(workflows.create('slowish'))
       ELSE length(workflows.create('one')) END;
};
close($fh);
$node->command_ok(
	[ 'pgbench', '-n', '-c', '4', '-T', '4', '-R', '200', '-f', $script, 'postgres' ],
	'clients created singles and batches for 4 s');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 0 FROM workflows.instances WHERE status IN ('queued', 'running')",
		't'),
	'everything the clients created ended, with the poll at an hour');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.instances WHERE status <> 'complete'"),
	'0', 'and completed');

$node->stop;
done_testing();
