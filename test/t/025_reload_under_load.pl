# 025_reload_under_load.pl
#
# A configuration reload reaches a busy executor between two of its
# batches, not only once its backlog is drained.  One executor works off a
# backlog of one-step instances (about 1 ms each, some 10 s in all);
# workflows.log_level is raised to 'all' with ALTER SYSTEM and
# pg_reload_conf(), and the executor's first "instance ... starts" line
# must appear while instances of the backlog are still queued.  (An
# executor that looked at the reload only when it ran out of work kept its
# old settings -- size limits, allowed HTTP hosts, notifications -- for as
# long as its backlog lasted.)

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('reload_under_load');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 1
workflows.log_level = failures
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'workflows executor'")
  or die 'the executor did not start';
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION one(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.step('s', 'SELECT pg_sleep(0.001)');
END
$$;
SELECT workflows.register('one', 'one(jsonb)');
SELECT count(*) FROM workflows.create_batch('one',
    (SELECT jsonb_agg(jsonb_build_object('params', jsonb_build_object('i', g)))
       FROM generate_series(1, 10000) g));
});
$node->poll_query_until('postgres',
	"SELECT count(*) >= 100 FROM workflows.instances WHERE status = 'complete'")
  or die 'the executor did not start on the backlog';

my $offset = -s $node->logfile;
$node->safe_psql('postgres', "ALTER SYSTEM SET workflows.log_level = 'all'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
$node->wait_for_log(qr/workflows: instance "[^"]+" starts/, $offset);
my $queued = $node->safe_psql('postgres',
	"SELECT count(*) FROM workflows.instances WHERE status = 'queued'");
cmp_ok($queued, '>', 0,
	"the reload reached the busy executor while $queued instances of its backlog were still queued");

$node->stop('immediate');
done_testing();
