# bench/soak.pl -- the long form of the chaos soak; run by bench/soak.sh,
# which builds the extension into a private PostgreSQL tree and puts it
# first in PATH.  The workload, the faults and the invariants are those of
# the short form (test/t/WorkflowsSoak.pm, test/t/017_chaos_soak.pl);
# this adds the executors' memory and prints the results table.
#
# Environment: SOAK_SEED, SOAK_INSTANCES (1000), SOAK_FAULTS (40),
# SOAK_GAP_MIN/SOAK_GAP_MAX (seconds between faults, 3/9), SOAK_TAIL
# (seconds over which the work held back for after the last fault
# arrives, 60), SOAK_RESULTS (a file for the table).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use List::Util qw(min max sum0);
use Time::HiRes qw(time);
use WorkflowsSoak;

my $seed = $ENV{SOAK_SEED} // time % 100000;
my $n = $ENV{SOAK_INSTANCES} // 1000;
my $nfaults = $ENV{SOAK_FAULTS} // 40;
diag "bench/soak: seed $seed (replay with SOAK_SEED=$seed), $n instances, $nfaults faults";

my $node = PostgreSQL::Test::Cluster->new('soak');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 2
workflows.max_step_crashes = 100
max_worker_processes = 16
restart_after_crash = on
listen_addresses = ''
});
$node->start;

my $r = soak_run(
	node => $node,
	seed => $seed,
	instances => $n,
	faults => $nfaults,
	gap_min => $ENV{SOAK_GAP_MIN} // 3,
	gap_max => $ENV{SOAK_GAP_MAX} // 9,
	drain_max => 90,
	final_max => 240,
	tail_secs => $ENV{SOAK_TAIL} // 60,
	memory => 1,
	log => sub { diag @_ });
$node->stop;

# ---- the table --------------------------------------------------------------
my @t;
push @t, "| what | value |", "|---|---|";
push @t, "| seed | $seed |";
push @t, sprintf('| instances | %d (%d complete, %d errored as scripted) |',
	$r->{instances}, $r->{complete}, $r->{errored});
push @t, sprintf('| attempts, effects | %d, %d |', $r->{attempts}, $r->{effects});
my $nf = sum0(values %{ $r->{faults} });
push @t, sprintf('| faults | %d in %.0f s: %s |', $nf, $r->{fault_secs},
	join(', ', map { "$_ $r->{faults}{$_}" } sort keys %{ $r->{faults} }));
for my $k (sort keys %{ $r->{recovery} })
{
	my @v = @{ $r->{recovery}{$k} };
	push @t, sprintf('| fault %s: fault + recovery (+ its checks), median / max | %.1f / %.1f s |',
		$k, (sort { $a <=> $b } @v)[ $#v / 2 ], max(@v));
}
push @t, sprintf('| failed attempts by SQLSTATE | %s |',
	join(', ', map { "$_ $r->{failed_by_sqlstate}{$_}" } sort keys %{ $r->{failed_by_sqlstate} }));
push @t, sprintf('| steps with interrupted attempts | %d |', $r->{interrupted_steps});
# pg_cancel_backend faults: did they cancel steps?  A cancel that finds no
# executor inside a step's nap falls back to any executor, which may be
# between steps (nothing to cancel): only attempts failed with 57014 show
# that a step was cancelled.
my $cancel_faults = $r->{faults}{cancel} // 0;
my $cancelled = $r->{failed_by_sqlstate}{57014} // 0;
push @t, sprintf('| cancel faults: executors signalled inside a step / attempts cancelled (57014) | %d: %d / %d |',
	$cancel_faults, $r->{cancels_hit} // 0, $cancelled);
diag sprintf('cancel faults %d: %d executors signalled inside a step, %d attempts failed with 57014',
	$cancel_faults, $r->{cancels_hit} // 0, $cancelled);
ok($cancel_faults == 0 || $cancelled > 0,
	"the pg_cancel_backend faults cancelled steps ($cancelled attempts with 57014 from $cancel_faults faults)");
my $u = $r->{unclaimed};
push @t, sprintf('| after the last fault: backlog drained in | %s (oldest due and unclaimed: %.1f s) |',
	defined $u->{drained} ? sprintf('%.1f s', $u->{drained}) : 'NOT DRAINED', $u->{worst_drain});
push @t, sprintf('| then: samples, longest due and unclaimed, samples over 5 s | %d, %.1f s, %d |',
	$u->{samples}, $u->{worst_after}, $u->{violations});
push @t, sprintf('| last fault to last instance final | %.0f s |', $r->{after_last_secs});

# memory: per executor process, RssAnon (kB) first/min/max/last; growth
# after a 20 s warm-up for those that lived 60 s or more
my @procs = map { { pid => $_, %{ $r->{mem}{$_} } } } keys %{ $r->{mem} };
my @long = grep { defined $_->{warm} && $_->{last_t} - $_->{first_t} >= 60 } @procs;
push @t, sprintf('| executor processes seen (generations) | %d |', scalar @procs);
if (@procs)
{
	push @t, sprintf('| executor RssAnon, all processes: min / max | %.1f / %.1f MB |',
		min(map { $_->{min} } @procs) / 1024, max(map { $_->{max} } @procs) / 1024);
}
# every executor process sampled, however long it lived (a fault ends most)
for my $p (sort { $a->{first_t} <=> $b->{first_t} } @procs)
{
	push @t, sprintf('| executor %d: lived %.0f s, %d samples; RssAnon first / max / last | %.1f / %.1f / %.1f MB |',
		$p->{pid}, ($p->{last_t} // $p->{first_t}) - $p->{first_t}, $p->{samples} // 0,
		$p->{first} / 1024, $p->{max} / 1024, ($p->{last} // $p->{first}) / 1024);
}
for my $p (sort { $b->{last_t} - $b->{first_t} <=> $a->{last_t} - $a->{first_t} } @long)
{
	push @t, sprintf('| executor %d (lived %.0f s, %d samples): RssAnon at 20 s / max / last | %.1f / %.1f / %.1f MB (growth %+.1f MB) |',
		$p->{pid}, $p->{last_t} - $p->{first_t}, $p->{samples}, $p->{warm} / 1024,
		$p->{max} / 1024, $p->{last} / 1024, ($p->{last} - $p->{warm}) / 1024);
}
push @t, sprintf('| wall time | %.0f s |', $r->{total_secs});
my $table = join("\n", @t) . "\n";
# (PostgreSQL::Test::Utils sends STDOUT to the test's log: soak.sh prints
# the file)
if ($ENV{SOAK_RESULTS})
{
	open(my $fh, '>', $ENV{SOAK_RESULTS}) or die "cannot write $ENV{SOAK_RESULTS}: $!";
	print $fh $table;
	close $fh;
}
done_testing();
