# 024_memo_memory.pl
#
# The memo cache is bounded by what its outputs take in memory, not by
# what they take on disk.  An instance's steps return 1 MB outputs that
# compress about 100:1 (one repeated letter), with workflows.memo_cache_size
# = 1MB; after a sleep, the replay that settles the instance loads its
# memos.  Bounded by stored (compressed) sizes, about 80 of those outputs
# -- 80 MB -- would be decompressed into the executor at once; bounded by
# their real size, at most 1 MB is kept and the others are read back when
# the replay reaches them.  The executor's own memory (RssAnon, sampled
# every 2 ms) while that replay runs must stay far below the first figure,
# and the instance must still return every output.

use strict;
use warnings;

use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('memo_memory');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows'
workflows.max_workers = 1
workflows.memo_cache_size = '1MB'
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION workflows');
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION big_outputs(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    total bigint := 0;
BEGIN
    FOR i IN 1..100 LOOP
        total := total + length(workflows.step('big',
            'SELECT to_jsonb(repeat(''x'', 1000000) || $1::text)',
            jsonb_build_array(i))->>0);
    END LOOP;
    PERFORM workflows.sleep('nap', '3 seconds');
    RETURN to_jsonb(total);
END
$$;
SELECT workflows.register('big-outputs', 'big_outputs(jsonb)');
});

# the executor's own memory (RssAnon: its heap, not shared buffers), in kB
sub rss_anon
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	my ($kb) = map { /^RssAnon:\s+(\d+)/ ? $1 : () } <$fh>;
	close $fh;
	return $kb;
}

$node->safe_psql('postgres', q{SELECT workflows.create('big-outputs', '{}', 'big')});
$node->poll_query_until('postgres',
	q{SELECT status IN ('waiting', 'errored') FROM workflows.instances WHERE id = 'big'})
  or die 'the instance did not reach its sleep';
is($node->safe_psql('postgres', q{SELECT status FROM workflows.instances WHERE id = 'big'}),
	'waiting', 'the instance ran its steps and sleeps');
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflows executor'});
my $before = rss_anon($pid);
note "executor $pid: RssAnon before the replay ${before} kB";

# sample the executor's memory every 2 ms until the instance is complete
my $stop = "${PostgreSQL::Test::Utils::tmp_check}/memo_memory.stop";
my $peak_file = "${PostgreSQL::Test::Utils::tmp_check}/memo_memory.peak";
unlink $stop;
my $child = fork() // die "fork: $!";
if ($child == 0)
{
	my $peak = 0;
	until (-e $stop)
	{
		my $kb = rss_anon($pid) // last;
		$peak = $kb if $kb > $peak;
		select(undef, undef, undef, 0.002);
	}
	open(my $fh, '>', $peak_file) or die;
	print $fh $peak;
	close $fh;
	# not exit(): the test modules' END blocks would stop the node
	POSIX::_exit(0);
}
$node->poll_query_until('postgres',
	q{SELECT status = 'complete' FROM workflows.instances WHERE id = 'big'})
  or die 'the instance did not complete';
open(my $fh, '>', $stop) or die;
close $fh;
waitpid($child, 0);
my $peak = slurp_file($peak_file);
note "executor $pid: RssAnon at its peak during the replay ${peak} kB";

# 100 outputs of 1,000,000 letters and their number, all read back
my $expected = 0;
$expected += 1000000 + length($_) for 1 .. 100;
is($node->safe_psql('postgres', q{SELECT output FROM workflows.instances WHERE id = 'big'}),
	$expected, 'the instance returned every output');
cmp_ok($peak - $before, '<', 40 * 1024,
	'the replay that loaded the memos held less than 40 MB more than before (the outputs are 100 MB)');

$node->stop;
done_testing();
