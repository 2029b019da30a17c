# WorkflowsSoak.pm: the chaos soak -- a workload of "soak" instances
# (bench/workloads/soak.sql) run while a driver applies random faults,
# then the invariants.  Used by the short form, test/t/017_chaos_soak.pl,
# and by the long form, bench/soak.pl (bench/soak.sh).
#
# The driver is one loop: between faults it creates instances in waves,
# sends the events they wait for and samples the executors' memory; at
# random times (fixed seed) it applies a fault and waits, bounded, until
# the cluster serves again.  Faults:
#
#   pm_kill9     SIGKILL of the postmaster, then a start once its children
#                are gone
#   fast_restart pg_ctl stop -m fast, start
#   exec_term    SIGTERM of an executor (the launcher restarts it)
#   exec_kill    SIGKILL of an executor (a crash-restart of the server)
#   cancel       pg_cancel_backend() of an executor, inside a step if one
#                is in one
#   drop_db      DROP DATABASE of the workload's database by a role that
#                does not own it: must fail with 42501 and change nothing
#                (the executors keep running)
#   squeeze      ALTER SYSTEM SET max_worker_processes = 2 or 3 (room for
#                no or one executor) + restart, a few seconds of that, then
#                RESET + restart
#
# Afterwards: every instance reaches the state its params imply, every
# effect exactly once (WorkflowsInvariant), no attempt failed with an
# SQLSTATE other than the scripted ones and those of interrupted attempts,
# and no instance stays runnable but unclaimed (see check_unclaimed).

package WorkflowsSoak;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use JSON::PP;
use List::Util qw(shuffle min max sum0);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use WorkflowsInvariant;

our @EXPORT = qw(soak_run);

our @FAULT_KINDS =
  qw(pm_kill9 fast_restart exec_term exec_kill cancel drop_db squeeze);

# SQLSTATEs a failed attempt may have: interrupted by a crash of its
# executor (WF008), by an orderly stop (57P01), cancelled (57014); the
# scripted failures of "flaky" (SK001) and "doomed" (SK002) steps
my %ALLOWED_SQLSTATE = map { $_ => 1 } qw(WF008 57P01 57014 SK001 SK002);

# how long an instance may be due and unclaimed (see check_unclaimed)
my $LATE_BOUND = 5;

sub new_state
{
	my (%o) = @_;
	my $s = {
		node => $o{node},
		db => $o{db} // 'soak',
		seed => $o{seed},
		ninstances => $o{instances},
		nfaults => $o{faults},
		gap_min => $o{gap_min} // 1,
		gap_max => $o{gap_max} // 3,
		executors => $o{executors} // 2,
		drain_max => $o{drain_max} // 60,
		final_max => $o{final_max} // 120,
		tail_secs => $o{tail_secs} // 5,
		memory => $o{memory} // 0,
		log => $o{log} // sub { note @_ },
		counts => { map { $_ => 0 } @FAULT_KINDS },
		created => {},
		sent => {},
		mem => {},
		cancels_hit => 0,
		cancels_sent => 0,
		drop_restarted => 0,
		pm_pid => undef,
	};
	return $s;
}

# ---------------------------------------------------------------------------
# the workload: what each instance does, from the seed

sub plan_instances
{
	my ($s) = @_;
	my @inst;
	for my $i (1 .. $s->{ninstances})
	{
		my %p = (steps => 1 + int(rand(4)));
		$p{nap} = sprintf('%.2f', 0.1 + rand(0.3)) + 0 if rand() < 0.4;
		$p{sleep} = sprintf('%.1f', 0.5 + rand(2.5)) + 0 if rand() < 0.5;
		$p{event} = JSON::PP::true if rand() < 0.3;
		$p{flaky} = 1 + int(rand(3)) if rand() < 0.2;
		$p{doomed} = JSON::PP::true if rand() < 0.04;
		my $id = sprintf('soak-%04d', $i);
		my @keys = map { "s$_" } 1 .. $p{steps};
		push @keys, 'sleep' if exists $p{sleep};
		push @keys, 'event' if $p{event};
		push @keys, 'flaky' if $p{flaky};
		push @inst,
		  {
			id => $id,
			params => \%p,
			keys => \@keys,
			payload => { n => $i },
		  };
	}
	return \@inst;
}

# the output a complete instance must return
sub expected_output
{
	my ($in) = @_;
	my $p = $in->{params};
	return {
		steps => $p->{steps},
		event => $p->{event} ? $in->{payload} : undef,
		flaky => $p->{flaky} // undef,
	};
}

# ---------------------------------------------------------------------------
# talking to a server that may be down at any moment

# errors that mean "the server is (re)starting or went away": try again
my $TRANSIENT = qr/could not connect|connection to server|server closed the connection|
	terminating connection|starting up|shutting down|in recovery mode|
	not yet accepting connections|no connection to the server|Connection refused|
	No such file or directory|the database system is|lost synchronization|
	could not send data|could not receive data|canceling statement due to/xi;

# sq($s, $sql [, timeout => secs, user => role]): stdout; retries while the
# server is away, dies on any other error or after the timeout
sub sq
{
	my ($s, $sql, %o) = @_;
	my $deadline = time + ($o{timeout} // 90);
	for (;;)
	{
		my ($out, $err) = ('', '');
		my $rc = $s->{node}->psql(
			$o{db} // $s->{db}, $sql,
			stdout => \$out,
			stderr => \$err,
			on_error_stop => 1,
			$o{user} ? (extra_params => [ '-U', $o{user} ]) : ());
		return $out if $rc == 0;
		if (($rc == 2 || $err =~ $TRANSIENT) && time < $deadline)
		{
			sleep 0.2;
			next;
		}
		die "soak: query failed (rc $rc): $sql\n$err";
	}
}

sub executor_pids
{
	my ($s) = @_;
	my $out = sq($s,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor' ORDER BY pid"
	);
	return split /\n/, $out;
}

# wait (bounded) until the server answers and $n executors run
sub wait_ready
{
	my ($s, $n, $what) = @_;
	my $t = time;
	$n //= $s->{executors};
	while (time - $t < 90)
	{
		my @p = eval { executor_pids($s) };
		return time - $t if @p >= $n;
		sleep 0.2;
	}
	die "soak: the cluster did not come back after $what (90 s)";
}

# children of a process, from /proc
sub children_of
{
	my ($ppid) = @_;
	my @kids;
	for my $f (glob '/proc/[0-9]*/stat')
	{
		open(my $fh, '<', $f) or next;
		my $line = <$fh>;
		close $fh;
		next unless defined $line && $line =~ /^(\d+) \(.*\) \S (\d+)/s;
		push @kids, $1 if $2 == $ppid;
	}
	return @kids;
}

sub postmaster_pid
{
	my ($s) = @_;
	my $f = $s->{node}->data_dir . '/postmaster.pid';
	open(my $fh, '<', $f) or return undef;
	my $pid = <$fh>;
	close $fh;
	chomp $pid if defined $pid;
	return $pid;
}

# start the node, retrying while the old postmaster's children linger
sub start_node
{
	my ($s) = @_;
	my $t = time;
	until ($s->{node}->start(fail_ok => 1))
	{
		die 'soak: the server does not start (60 s)' if time - $t > 60;
		sleep 0.5;
	}
	return;
}

# ---------------------------------------------------------------------------
# faults

sub fault_pm_kill9
{
	my ($s) = @_;
	my $pm = postmaster_pid($s);
	my @kids = children_of($pm);
	$s->{node}->kill9;
	my $t = time;
	# the children notice the postmaster's death (WL_EXIT_ON_PM_DEATH)
	while (grep { kill(0, $_) } @kids)
	{
		die 'soak: children of the killed postmaster linger (60 s)'
		  if time - $t > 60;
		sleep 0.1;
	}
	start_node($s);
	return wait_ready($s, undef, 'a postmaster SIGKILL');
}

sub fault_fast_restart
{
	my ($s) = @_;
	$s->{node}->stop('fast');
	start_node($s);
	return wait_ready($s, undef, 'a fast restart');
}

# an executor, preferably one inside a step
sub victim
{
	my ($s) = @_;
	my $out = sq(
		$s, q{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'workflows executor'
 ORDER BY (wait_event = 'PgSleep') DESC, random() LIMIT 1});
	return $out;
}

sub fault_exec_term
{
	my ($s) = @_;
	my $pid = victim($s);
	return 0 unless $pid;
	kill 'TERM', $pid;
	my $t = time;
	sleep 0.1 while kill(0, $pid) && time - $t < 30;
	return wait_ready($s, undef, "SIGTERM of executor $pid");
}

sub fault_exec_kill
{
	my ($s) = @_;
	my $pid = victim($s);
	return 0 unless $pid;
	my $offset = -s $s->{node}->logfile;
	kill 'KILL', $pid;
	$s->{node}->wait_for_log(qr/all server processes terminated; reinitializing/,
		$offset);
	return wait_ready($s, undef, "SIGKILL of executor $pid");
}

# a cancel of an executor inside a step's nap (tried for up to 5 s), else
# of any executor (then it may find it between steps: nothing to cancel).
# Executors are found by backend_type: a step may change application_name.
sub fault_cancel
{
	my ($s) = @_;
	for my $try (1 .. 25)
	{
		# the driver creates nothing while it tries: start a napping
		# instance of the plan now and then, so that one is inside a step
		if ($try % 5 == 1)
		{
			my ($next) = grep { !$s->{created}{ $_->{id} } && $_->{params}{nap} }
			  @{ $s->{inst} };
			create_list($s, [$next]) if $next;
		}
		my $n = sq(
			$s, q{
SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity
 WHERE backend_type = 'workflows executor' AND wait_event = 'PgSleep'});
		if ($n > 0)
		{
			# every executor napping at that moment was cancelled: one
			# fault can cancel as many attempts as there are executors
			$s->{cancels_hit} += $n;
			$s->{cancels_sent} += $n;
			return 0;
		}
		sleep 0.2;
	}
	$s->{cancels_sent} += sq($s,
		"SELECT count(pg_cancel_backend(pid)) FROM (SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor' ORDER BY random() LIMIT 1) e"
	);
	return 0;
}

# DROP DATABASE by a role that does not own it: refused, and nothing else
# happens -- the executors of the database keep running
sub fault_drop_db
{
	my ($s) = @_;
	my @before = executor_pids($s);
	my ($out, $err) = ('', '');
	my $rc = $s->{node}->psql(
		'postgres', "DROP DATABASE $s->{db}",
		stdout => \$out,
		stderr => \$err,
		extra_params => [ '-U', 'soak_intruder' ]);
	if ($rc == 0)
	{
		die "soak: a non-owner dropped database $s->{db}";
	}
	if ($err !~ /must be owner of database/)
	{
		# the server went away under us (it cannot: no fault runs now)
		die "soak: DROP DATABASE by a non-owner failed otherwise: $err";
	}
	# the launcher restarts an executor after 1 s: look after 1.5 s
	sleep 1.5;
	my @after = executor_pids($s);
	my %after = map { $_ => 1 } @after;
	my $gone = grep { !$after{$_} } @before;
	if ($gone)
	{
		$s->{drop_restarted} += $gone;
		$s->{log}->("  the non-owner's DROP DATABASE stopped $gone executor(s)");
		wait_ready($s, undef, 'a DROP DATABASE by a non-owner');
	}
	return 0;
}

sub fault_squeeze
{
	my ($s) = @_;
	# the workflows launcher and the logical replication launcher take two
	# worker slots: 2 leaves no executor, 3 leaves one
	my $mwp = 2 + int(rand(2));
	sq($s, "ALTER SYSTEM SET max_worker_processes = $mwp");
	$s->{node}->stop('fast');
	start_node($s);
	my $hold = 2 + rand(2);
	$s->{log}->(sprintf('  max_worker_processes = %d for %.1f s', $mwp, $hold));
	tick_for($s, $hold);
	my $n = () = executor_pids($s);
	$s->{squeeze_max_execs} = max($s->{squeeze_max_execs} // 0, $n);
	$s->{squeeze_over} = 1 if $n > $mwp - 2;
	sq($s, 'ALTER SYSTEM RESET max_worker_processes');
	$s->{node}->stop('fast');
	start_node($s);
	return wait_ready($s, undef, 'the end of a max_worker_processes squeeze');
}

my %FAULT = (
	pm_kill9 => \&fault_pm_kill9,
	fast_restart => \&fault_fast_restart,
	exec_term => \&fault_exec_term,
	exec_kill => \&fault_exec_kill,
	cancel => \&fault_cancel,
	drop_db => \&fault_drop_db,
	squeeze => \&fault_squeeze,);

# the fault sequence: every kind at least once, the rest at random (at
# most one squeeze per 10 faults: it costs two restarts)
sub plan_faults
{
	my ($s) = @_;
	my @f = @FAULT_KINDS;
	my $squeezes = 1;
	while (@f < $s->{nfaults})
	{
		my $k = $FAULT_KINDS[ int(rand(@FAULT_KINDS)) ];
		next if $k eq 'squeeze' && ++$squeezes > 1 + int($s->{nfaults} / 10);
		push @f, $k;
	}
	return [ shuffle @f ];
}

# ---------------------------------------------------------------------------
# the driver's work between faults

sub create_some
{
	my ($s, $n) = @_;
	my @todo = grep { !$s->{created}{ $_->{id} } } @{ $s->{inst} };
	@todo = @todo[ 0 .. min($n, scalar @todo) - 1 ];
	create_list($s, \@todo);
	return;
}

# create these instances of the plan
sub create_list
{
	my ($s, $list) = @_;
	my @todo = @$list;
	return unless @todo;
	my $json = encode_json(
		[ map { { id => $_->{id}, params => $_->{params} } } @todo ]);
	# idempotent: a batch that committed before the connection broke is
	# acknowledged again, not created twice
	sq($s,
		"SELECT count(*) FROM workflows.create_batch('soak', \$j\$$json\$j\$, if_not_exists => true)"
	);
	$s->{created}{ $_->{id} } = 1 for @todo;
	return;
}

# create what is due by now: the instances not held back for the tail,
# spread evenly over the expected length of the fault phase
sub create_due
{
	my ($s) = @_;
	my $frac = min(1, (time - $s->{t_faults}) / $s->{expected_secs});
	my $target = $s->{first_wave} + int($frac * ($s->{during} + 0.999));
	my $n = $target - scalar(keys %{ $s->{created} });
	create_some($s, $n) if $n > 0;
	return;
}

# send up to $n events to created instances that wait for one
sub send_some
{
	my ($s, $n) = @_;
	my @todo = grep {
		     $_->{params}{event}
		  && $s->{created}{ $_->{id} }
		  && !$s->{sent}{ $_->{id} }
	} @{ $s->{inst} };
	@todo = (shuffle @todo)[ 0 .. min($n, scalar @todo) - 1];
	return unless @todo;
	my $calls = join(', ',
		map { "workflows.send_event('$_->{id}', 'go', '" . encode_json($_->{payload}) . "')" }
		  @todo);
	my $ok = eval { sq($s, "SELECT $calls", timeout => 5); 1 };
	if (!$ok)
	{
		# did it commit before the connection broke?  (then do not send
		# again: one event per instance)
		my $ids = join(',', map { "'$_->{id}'" } @todo);
		my $have = sq($s,
			"SELECT count(DISTINCT instance_id) FROM workflows.events WHERE instance_id IN ($ids)"
		);
		return unless $have == @todo;
	}
	$s->{sent}{ $_->{id} } = 1 for @todo;
	return;
}

# executors' private (anonymous) memory, from /proc/<pid>/status: RssAnon
# (the heap; shared buffers are shared memory and not in it)
sub sample_memory
{
	my ($s) = @_;
	return unless $s->{memory};
	my $pm = postmaster_pid($s) or return;
	my $now = time;
	for my $pid (children_of($pm))
	{
		open(my $fh, '<', "/proc/$pid/cmdline") or next;
		my $cmd = <$fh> // '';
		close $fh;
		next unless $cmd =~ /workflows executor/;
		open($fh, '<', "/proc/$pid/status") or next;
		my $anon;
		while (<$fh>)
		{
			$anon = $1 if /^RssAnon:\s+(\d+) kB/;
		}
		close $fh;
		next unless defined $anon;
		my $m = $s->{mem}{$pid} //= { first_t => $now, first => $anon, min => $anon, max => $anon };
		$m->{min} = min($m->{min}, $anon);
		$m->{max} = max($m->{max}, $anon);
		$m->{last} = $anon;
		$m->{last_t} = $now;
		# after a warm-up of 20 s: the baseline of "growth"
		$m->{warm} //= $anon if $now - $m->{first_t} >= 20;
		$m->{samples}++;
	}
	return;
}

# the driver's background work for $secs seconds
sub tick_for
{
	my ($s, $secs) = @_;
	my $end = time + $secs;
	while (time < $end)
	{
		eval {
			create_due($s);
			send_some($s, 3);
			sample_memory($s);
			1;
		} or $s->{log}->("  (driver: $@)");
		sleep 0.3;
	}
	return;
}

# ---------------------------------------------------------------------------
# after the last fault: nothing stays runnable but unclaimed
#
# What is fair: when the last fault ends, work that fell due during it is
# queued behind the executors (2 of them, steps of up to 0.3 s); that
# backlog is due "late" through no fault of the engine.  So (a) the oldest
# due and unclaimed instance must be due for less than $LATE_BOUND seconds
# within drain_max seconds after the recovery (the backlog drains), (b)
# from then until every instance is final, no sample may show an instance
# due and unclaimed for more than $LATE_BOUND seconds, and (c) at no sample
# after the recovery may an executor be idle for more than 2 s while an
# instance has been due and unclaimed for more than $LATE_BOUND seconds
# (an idle executor must not sleep through due work).  "Unclaimed" means
# no executor holds it (workflows.executors).
sub check_unclaimed
{
	my ($s) = @_;
	my $sql = qq{
SELECT count(*) FILTER (WHERE i.wake_at < now() - interval '$LATE_BOUND seconds'),
       coalesce(round(extract(epoch FROM now() - min(i.wake_at))::numeric, 2), 0),
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'workflows executor' AND state = 'idle'
           AND state_change < now() - interval '2 seconds'),
       (SELECT count(*) FROM workflows.instances
         WHERE status NOT IN ('complete', 'errored', 'terminated'))
  FROM workflows.instances i
 WHERE i.wake_at <= now()
   AND NOT EXISTS (SELECT 1 FROM workflows.executors e WHERE e.instance = i.id)};
	my $t0 = time;
	my ($drained, $violations, $idle_violations, $samples, $worst_after) =
	  (undef, 0, 0, 0, 0);
	my $worst_drain = 0;
	my @events_left = grep { $_->{params}{event} && !$s->{sent}{ $_->{id} } }
	  @{ $s->{inst} };
	# the rest of the work arrives over tail_secs: new instances, events
	my $per = max(1, int(@events_left * 0.3 / max(0.3, $s->{tail_secs})) + 1);
	for (;;)
	{
		my $now = time;
		create_some($s, $s->{wave});
		send_some($s, $per);
		sample_memory($s);
		my ($late, $oldest, $idle, $unfinished) = split /\|/, sq($s, $sql);
		$samples++;
		if (!defined $drained)
		{
			$worst_drain = max($worst_drain, $oldest);
			$drained = $now - $t0 if $late == 0;
		}
		else
		{
			$worst_after = max($worst_after, $oldest);
			if ($late > 0)
			{
				$violations++;
				$s->{log}->("  $late instance(s) due and unclaimed for over $LATE_BOUND s (oldest $oldest s)");
			}
		}
		if ($late > 0 && $idle > 0)
		{
			$idle_violations++;
			$s->{log}->("  $idle executor(s) idle for 2 s while $late instance(s) wait (oldest $oldest s)");
		}
		last
		  if $unfinished == 0
		  && !grep { !$s->{created}{ $_->{id} } } @{ $s->{inst} };
		last if time - $t0 > $s->{final_max};
		last if !defined $drained && time - $t0 > $s->{drain_max};
		sleep 0.25;
	}
	return {
		drained => $drained,
		worst_drain => $worst_drain,
		worst_after => $worst_after,
		violations => $violations,
		idle_violations => $idle_violations,
		samples => $samples,
	};
}

# ---------------------------------------------------------------------------
# the soak

# soak_run(node => $node, seed => N, instances => N, faults => N, ...):
# runs the soak on a started node (shared_preload_libraries = 'workflows',
# restart_after_crash = on), with Test::More checks; returns a hash of
# results for the report
sub soak_run
{
	my (%o) = @_;
	my $s = new_state(%o);
	my $node = $s->{node};
	my $t_start = time;
	srand($s->{seed});
	$s->{log}->("soak: seed $s->{seed}, $s->{ninstances} instances, $s->{nfaults} faults");

	my $setup = dirname(__FILE__) . '/../../bench/workloads/soak.sql';
	$node->safe_psql('postgres', "CREATE DATABASE $s->{db}");
	$node->safe_psql($s->{db}, 'CREATE EXTENSION workflows');
	$node->safe_psql($s->{db}, slurp_file($setup));
	wait_ready($s, undef, 'the setup');

	$s->{inst} = plan_instances($s);
	my $faults = plan_faults($s);
	$s->{log}->('soak: faults in order: ' . join(' ', @$faults));

	# 40% at once, the next 50% in waves between the faults, the last 10%
	# after the last fault
	$s->{first_wave} = int($s->{ninstances} * 0.4);
	my $held = int($s->{ninstances} * 0.1);
	$s->{during} = $s->{ninstances} - $s->{first_wave} - $held;
	# a fault and its recovery take about 1.5 s
	$s->{expected_secs} =
	  $s->{nfaults} * (($s->{gap_min} + $s->{gap_max}) / 2 + 1.5);
	$s->{t_faults} = time;
	create_some($s, $s->{first_wave});
	# hold back the last 10% for after the last fault
	my @held = $held ? splice(@{ $s->{inst} }, -$held) : ();
	my %recovery;
	my $i = 0;
	for my $kind (@$faults)
	{
		$i++;
		tick_for($s, $s->{gap_min} + rand($s->{gap_max} - $s->{gap_min}));
		my $t = time;
		my $ok = eval { $FAULT{$kind}->($s); 1 };
		if (!$ok)
		{
			fail("fault $i ($kind): the cluster recovers");
			diag($@);
			die $@;
		}
		$s->{counts}{$kind}++;
		push @{ $recovery{$kind} }, time - $t;
		$s->{log}->(sprintf('soak: fault %d/%d %s (%.1f s to recover) at %.0f s; %d created, %d events sent',
				$i, scalar @$faults, $kind, time - $t, time - $t_start,
				scalar keys %{ $s->{created} }, scalar keys %{ $s->{sent} }));
	}
	my $t_last = time;
	push @{ $s->{inst} }, @held;
	$s->{wave} = int($held / max(1, $s->{tail_secs} / 0.4)) + 1;

	# from the end of the last fault's recovery to the end of the work
	my $u = check_unclaimed($s);
	my $t_final = time;
	my $unfinished = sq($s,
		"SELECT count(*) FROM workflows.instances WHERE status NOT IN ('complete', 'errored', 'terminated')"
	);
	is(scalar(keys %{ $s->{created} }), $s->{ninstances}, 'every instance was created');
	is($unfinished, '0', 'every instance reached a final state');
	ok(defined $u->{drained},
		sprintf('the backlog left by the faults drained (no instance due and unclaimed for over %d s) within %d s',
			$LATE_BOUND, $s->{drain_max}));
	is($u->{violations}, 0,
		"after that, no instance was due and unclaimed for over $LATE_BOUND s ($u->{samples} samples)");
	is($u->{idle_violations}, 0,
		"no executor idled while an instance was due and unclaimed for over $LATE_BOUND s");
	if ($unfinished ne '0')
	{
		diag sq($s,
			"SELECT status, count(*), min(id), min(wake_at) FROM workflows.instances WHERE status NOT IN ('complete', 'errored', 'terminated') GROUP BY 1"
		);
	}

	my $r = check_final($s);
	$r->{seed} = $s->{seed};
	$r->{instances} = $s->{ninstances};
	$r->{faults} = $s->{counts};
	$r->{recovery} = \%recovery;
	$r->{unclaimed} = $u;
	$r->{drop_restarted} = $s->{drop_restarted};
	$r->{cancels_hit} = $s->{cancels_hit};
	$r->{fault_secs} = $t_last - $t_start;
	$r->{after_last_secs} = $t_final - $t_last;
	$r->{total_secs} = time - $t_start;
	$r->{mem} = $s->{mem};
	is($s->{drop_restarted}, 0,
		"DROP DATABASE by a non-owner stopped no executor ($s->{counts}{drop_db} attempts)");
	ok(!$s->{squeeze_over}, 'a squeeze left no more executors than worker slots');
	return $r;
}

# every instance in the state its params imply; effects exactly once;
# failed attempts only with the SQLSTATEs allowed
sub check_final
{
	my ($s) = @_;
	my $db = $s->{db};
	my (%acked, %errored, @rows);
	for my $in (@{ $s->{inst} })
	{
		my $p = $in->{params};
		my ($status, $out) =
		  $p->{doomed}
		  ? ('errored', undef)
		  : ('complete', encode_json(expected_output($in)));
		push @rows,
		  sprintf("('%s', '%s', %s, %d, %d)",
			$in->{id}, $status, defined $out ? "'$out'::jsonb" : 'NULL',
			$p->{flaky} // 0, $p->{doomed} ? 1 : 0);
		if ($p->{doomed}) { $errored{ $in->{id} } = $in->{keys} }
		else { $acked{ $in->{id} } = $in->{keys} }
	}
	my $values = join(",\n", @rows);
	sq($s,
		"CREATE TABLE soak_expected (id text PRIMARY KEY, status text, output jsonb, flaky int, doomed int);
		 INSERT INTO soak_expected VALUES $values");

	# the state each script implies: complete with its output, or (doomed)
	# errored by its step's SK002 -- or by 57014 if a cancel hit an attempt
	# of the doomed step (a cancel is charged to the retry limit of 1)
	my $wrong = sq(
		$s, q{
SELECT string_agg(x.id || ': ' || coalesce(i.status, 'missing') || ' ' || coalesce(i.output::text, i.error::text, ''), E'\n' ORDER BY x.id)
  FROM soak_expected x LEFT JOIN workflows.instances i ON i.id = x.id
 WHERE i.id IS NULL OR i.status <> x.status
    OR (x.status = 'complete' AND i.output IS DISTINCT FROM x.output)
    OR (x.status = 'errored' AND NOT (i.error->>'sqlstate' = 'SK002'
          OR (i.error->>'sqlstate' = '57014' AND EXISTS (
                SELECT 1 FROM workflows.attempts a WHERE a.instance_id = x.id
                   AND a.step_key = 'doomed' AND a.error->>'sqlstate' = '57014'))))});
	is($wrong, '', 'every instance ended in the state and with the output its script implies');
	is( sq($s, "SELECT count(*) FROM workflows.instances WHERE id NOT IN (SELECT id FROM soak_expected)"),
		'0', 'no instance the driver did not create');

	# effects exactly once: complete instances through check_invariant, the
	# errored (doomed) ones' steps before the failure as well
	check_invariant($s->{node}, $db, 'soak', \%acked, qr/^(sleep|event)$/,
		\%errored);

	# failed attempts: only the allowed SQLSTATEs; the scripted ones exactly
	# as scripted
	my $unexpected = sq($s, q{
SELECT string_agg(instance_id || '/' || step_key || '#' || attempt || ': ' || coalesce(error->>'sqlstate', '?') || ' ' || coalesce(error->>'message', ''), E'\n')
  FROM workflows.attempts
 WHERE NOT success AND coalesce(error->>'sqlstate', '?') NOT IN ('WF008', '57P01', '57014', 'SK001', 'SK002')});
	is($unexpected, '', 'no attempt failed with an unexpected SQLSTATE');
	is( sq(
			$s, q{
SELECT count(*) FROM soak_expected x
 WHERE x.flaky <> (SELECT count(*) FROM workflows.attempts a WHERE a.instance_id = x.id
                     AND a.step_key = 'flaky' AND a.error->>'sqlstate' = 'SK001')
    OR (x.doomed = 0 AND EXISTS (SELECT 1 FROM workflows.attempts a WHERE a.instance_id = x.id
                     AND a.error->>'sqlstate' = 'SK002'))
    OR (x.doomed = 1 AND (SELECT count(*) FROM workflows.attempts a WHERE a.instance_id = x.id
                     AND a.step_key = 'doomed' AND a.error->>'sqlstate' IN ('SK002', '57014')) <> 2)
    OR EXISTS (SELECT 1 FROM workflows.attempts a WHERE a.instance_id = x.id
                 AND a.error->>'sqlstate' = 'SK001' AND a.step_key <> 'flaky')}),
		'0',
		'scripted failures happened exactly as scripted (flaky: K, doomed: 2)');

	my %by = split /[|\n]/, sq($s, q{
SELECT error->>'sqlstate', count(*) FROM workflows.attempts WHERE NOT success GROUP BY 1});
	my $crashes = $s->{counts}{exec_kill} + $s->{counts}{pm_kill9};
	ok(($by{WF008} // 0) <= $s->{executors} * $crashes,
		sprintf('attempts interrupted as crashes (WF008: %d) no more than the executors times the SIGKILLs (%d)',
			$by{WF008} // 0, $crashes));
	# a cancel signal ends at most the one attempt it lands in
	ok(($by{57014} // 0) <= $s->{cancels_sent},
		sprintf('cancelled attempts (57014: %d) no more than the cancel signals sent (%d, in %d faults)',
			$by{57014} // 0, $s->{cancels_sent}, $s->{counts}{cancel}));
	my $final = sq($s, q{
SELECT count(*) FILTER (WHERE status = 'complete'), count(*) FILTER (WHERE status = 'errored'),
       (SELECT count(*) FROM workflows.attempts), (SELECT count(*) FROM effects),
       (SELECT count(*) FROM workflows.steps WHERE interrupted > 0)
  FROM workflows.instances});
	my ($complete, $nerrored, $attempts, $effects, $interrupted_steps) = split /\|/, $final;
	return {
		complete => $complete,
		errored => $nerrored,
		attempts => $attempts,
		effects => $effects,
		failed_by_sqlstate => \%by,
		interrupted_steps => $interrupted_steps,
	};
}

1;
