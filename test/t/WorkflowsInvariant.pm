# WorkflowsInvariant.pm: the invariant the crash, failover and load tests
# check after every scenario.
#
# Every acknowledged instance exists and is complete, with every expected
# step complete; no step effect appears twice; no complete step memo lacks
# its effect and no effect lacks its complete memo; the number of effects is
# right; nothing is left running, or queued or waiting without a wake time.
# Effects are rows (instance, step) of a table "effects" with no unique
# constraint, written by the steps of the tests' workflows.

package WorkflowsInvariant;

use strict;
use warnings;

use Exporter 'import';
use Test::More;

our @EXPORT = qw(check_invariant check_still_complete);

# check_invariant($node, $db, $label, \%acked [, $no_effect [, \%errored]])
#   %acked: instance id => [ keys of the steps that must be complete ]
#   $no_effect: a regexp of step keys that write no effect (sleeps, waits)
#   %errored: instances that must end errored (a step failed for good, as
#     their script says), id => [ keys of the steps complete before that ]
sub check_invariant
{
	my ($node, $db, $label, $acked_complete, $no_effect, $errored) = @_;
	my $acked = { %$acked_complete, %{ $errored // {} } };
	my @ids = sort keys %$acked;

	# fresh statistics: the anti-joins below are slow on a never-analyzed table
	$node->safe_psql($db, 'ANALYZE effects, workflows.steps, workflows.instances');

	my $ids = join(',',
		map { "('$_', '" . ($errored && $errored->{$_} ? 'errored' : 'complete') . "')" }
		  @ids);
	is( $node->safe_psql(
			$db, qq{
SELECT count(*) FROM (VALUES $ids) a(id, status)
 WHERE NOT EXISTS (SELECT 1 FROM workflows.instances i
                    WHERE i.id = a.id AND i.status = a.status)
}),
		'0',
		"$label: every acknowledged instance exists and is complete"
		  . ($errored ? ' (or errored, as scripted)' : ''));
	my $expected = join(
		',',
		map {
			my $id = $_;
			map { "('$id','$_')" } @{ $acked->{$id} }
		} @ids);
	is( $node->safe_psql(
			$db, qq{
SELECT count(*) FROM (VALUES $expected) x(instance_id, key)
 WHERE NOT EXISTS (SELECT 1 FROM workflows.steps s
                    WHERE s.instance_id = x.instance_id AND s.key = x.key
                      AND s.status = 'complete')
}),
		'0',
		"$label: every step of every acknowledged instance is complete");
	is( $node->safe_psql(
			$db, q{
SELECT count(*) FROM (SELECT instance, step FROM effects
                       GROUP BY instance, step HAVING count(*) > 1) d
}),
		'0',
		"$label: no step effect appears twice");
	is( $node->safe_psql(
			$db, q{
SELECT count(*) FROM workflows.steps s
 WHERE s.type = 'step' AND s.status = 'complete'
   AND NOT EXISTS (SELECT 1 FROM effects e WHERE e.instance = s.instance_id AND e.step = s.key)
}),
		'0',
		"$label: no complete step memo without its effect");
	is( $node->safe_psql(
			$db, q{
SELECT count(*) FROM effects e
 WHERE NOT EXISTS (SELECT 1 FROM workflows.steps s
                    WHERE s.instance_id = e.instance AND s.key = e.step
                      AND s.type = 'step' AND s.status = 'complete')
}),
		'0',
		"$label: no effect without its complete step memo");
	my $nsteps = 0;
	$nsteps += grep { !defined $no_effect || !/$no_effect/ } @{ $acked->{$_} } for @ids;
	is($node->safe_psql($db, 'SELECT count(*) FROM effects'),
		$nsteps, "$label: $nsteps effects in all");
	is( $node->safe_psql(
			$db, q{
SELECT count(*) FROM workflows.instances
 WHERE status = 'running'
    OR (status IN ('queued', 'waiting') AND wake_at IS NULL)
}),
		'0',
		"$label: no instance is left running or without a wake time");
	return;
}

# check_still_complete($node, $db, $label, @steps): every "instance/key" in
# @steps (steps seen complete before a stop or a failover) is complete now
sub check_still_complete
{
	my ($node, $db, $label, @steps) = @_;
	my $values = join(',',
		map { my ($i, $k) = split m{/}, $_, 2; "('$i','$k')" } @steps);

	is( $node->safe_psql(
			$db, qq{
SELECT count(*) FROM (VALUES $values) c(instance_id, key)
 WHERE NOT EXISTS (SELECT 1 FROM workflows.steps s
                    WHERE s.instance_id = c.instance_id AND s.key = c.key
                      AND s.status = 'complete')
}),
		'0',
		"$label (" . scalar(@steps) . ' steps)');
	return;
}

1;
