# 009_notify.pl
#
# Completion without polling: a session that LISTENs on channel "workflows"
# is told when an instance completes, errors or is terminated (id and
# status only, never data); workflows.executors shows which instance and
# step each executor runs; workflows.log_level = 'all' logs every start and
# end, and workflows.log_step_details = off keeps error messages out of the
# log.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('notify');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
max_worker_processes = 16
workflows.log_level = 'all'
workflows.log_step_details = off
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION workflows;
CREATE FUNCTION secretive(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF event->'payload' ? 'fail' THEN
        PERFORM workflows.step('leak', 'SELECT 1 / 0 WHERE $1 = ''secret-value''', '["secret-value"]',
                               '{"retries": {"limit": 0}}');
    END IF;
    IF event->'payload' ? 'block' THEN
        PERFORM workflows.step('blocked', 'SELECT pg_advisory_xact_lock(77)');
    END IF;
    RETURN jsonb_build_object('secret', 'do not notify me');
END
$$;
SELECT workflows.register('secretive', 'secretive(jsonb)');
});

# LISTEN, then create instances that complete, error and get terminated
my $out = $node->safe_psql(
	'postgres', q{
LISTEN workflows;
SELECT pg_advisory_lock(77);
SELECT workflows.create('secretive', '{}', 'n-ok');
SELECT workflows.create('secretive', '{"fail": true}', 'n-err');
SELECT workflows.create('secretive', '{"block": true}', 'n-term');
SELECT workflows.wait('n-ok', '60 s')->>'status';
SELECT workflows.wait('n-err', '60 s')->>'status';
SELECT workflows.terminate('n-term');
SELECT pg_advisory_unlock(77);
SELECT workflows.wait('n-term', '60 s')->>'status';
SELECT pg_sleep(0.2);
SELECT 'done';
});
like($out, qr/Asynchronous notification "workflows" with payload "\{"id": "n-ok", "status": "complete"\}"/,
	'a complete instance is announced with its id and status');
like($out, qr/Asynchronous notification "workflows" with payload "\{"id": "n-err", "status": "errored"\}"/,
	'an errored instance is announced');
like($out, qr/Asynchronous notification "workflows" with payload "\{"id": "n-term", "status": "terminated"\}"/,
	'a terminated instance is announced');
unlike($out, qr/do not notify me/, 'no data in notifications');

# the executors view shows what runs
$node->safe_psql('postgres', "SELECT workflows.create('secretive', '{\"block\": true}', 'n-view')");
my $bg = $node->background_psql('postgres');
$bg->query_safe('SELECT pg_advisory_lock(77)');
$node->safe_psql('postgres', "SELECT workflows.create('secretive', '{\"block\": true}', 'n-view2')");
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM workflows.executors WHERE instance = 'n-view2' AND step = 'blocked'")
  or die 'the executors view never showed the blocked step';
is( $node->safe_psql('postgres',
		"SELECT datname, since <= now() FROM workflows.executors WHERE instance = 'n-view2'"),
	'postgres|t', 'workflows.executors shows the database and since when');
is($node->safe_psql('postgres', 'SELECT count(*) FROM workflows.executors'),
	'2', 'both executors are listed');
$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
is( $node->safe_psql('postgres',
		'SELECT count(*), count(instance) FROM workflows.executors', extra_params => [ '-U', 'nobody' ]),
	'2|0', 'another role sees the executors but not the instances');
$bg->query_safe('SELECT pg_advisory_unlock(77)');
$bg->quit;
is($node->safe_psql('postgres', "SELECT workflows.wait('n-view2', '60 s')->>'status'"),
	'complete', 'the blocked instance completes');

# the log: starts and ends with log_level = all; no payload in messages
my $log = slurp_file($node->logfile);
like($log, qr/workflows: instance "n-ok" starts/, 'instance starts are logged');
like($log, qr/workflows: instance "n-ok" is complete/, 'instance ends are logged');
like($log, qr/workflows: step "leak" of instance "n-err" failed for good after 1 attempt: 22012/,
	'a failed step is logged with its SQLSTATE');
unlike($log, qr/division by zero/, 'with log_step_details off, error messages stay out of the log');

$node->stop;
done_testing();
