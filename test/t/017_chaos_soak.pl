# 017_chaos_soak.pl
#
# The chaos soak, short form (the long form is bench/soak.sh): 250
# instances of the "soak" workflow (bench/workloads/soak.sql: steps that
# write one effect each, some napping inside the step, durable sleeps of
# 0.5-3 s, event waits, a step that fails its first K attempts, a few
# instances doomed to end errored) run while a driver applies 14 random
# faults: postmaster SIGKILL, fast restarts, executor SIGTERM and SIGKILL,
# pg_cancel_backend of steps, DROP DATABASE by a non-owner, and a
# max_worker_processes squeeze -- each kind at least once, in an order
# drawn from a seed (printed; set SOAK_SEED to replay one).  The driver
# creates instances and sends events between and during the faults.
#
# Afterwards (test/t/WorkflowsSoak.pm): every instance ends in the state
# its params imply, with its output; every effect exactly once
# (WorkflowsInvariant); no attempt failed but with the scripted SQLSTATEs
# and those of interrupted attempts (WF008 killed executor, 57P01 orderly
# stop, 57014 cancel); the backlog the faults left drains and then no
# instance stays due and unclaimed for more than 5 s (see check_unclaimed
# for what is fair); a non-owner's DROP DATABASE stops no executor.
#
# workflows.max_step_crashes is 100 here: a SIGKILL of an executor inside
# a step counts one crash for that step, and quarantine after a few real
# crashes is the designed behaviour (test/t/005_poison_step.pl) -- random
# kills must not quarantine healthy steps in a soak.
#
# Environment: SOAK_SEED (default 20240517), SOAK_INSTANCES (250),
# SOAK_FAULTS (14).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use WorkflowsSoak;

my $started = time;
my $seed = $ENV{SOAK_SEED} // 20240517;
diag "017_chaos_soak: seed $seed (replay with SOAK_SEED=$seed)";

my $node = PostgreSQL::Test::Cluster->new('chaos_soak');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
workflows.max_step_crashes = 100
max_worker_processes = 16
# Cluster.pm turns this off; the soak kills executors on purpose
restart_after_crash = on
});
$node->start;

my $r = soak_run(
	node => $node,
	seed => $seed,
	instances => $ENV{SOAK_INSTANCES} // 250,
	faults => $ENV{SOAK_FAULTS} // 14,
	gap_min => 1,
	gap_max => 2.5,
	drain_max => 30,
	final_max => 60,
	tail_secs => 5);

note sprintf(
	'soak: %d instances (%d complete, %d errored), %d attempts, %d effects; faults: %s; failed attempts by SQLSTATE: %s; backlog drained in %.1f s',
	$r->{instances}, $r->{complete}, $r->{errored}, $r->{attempts}, $r->{effects},
	join(' ', map { "$_=$r->{faults}{$_}" } sort keys %{ $r->{faults} }),
	join(' ', map { "$_=$r->{failed_by_sqlstate}{$_}" } sort keys %{ $r->{failed_by_sqlstate} }),
	$r->{unclaimed}{drained} // -1);

$node->stop;
note sprintf('017_chaos_soak took %.1f s (seed %d)', time - $started, $seed);
done_testing();
