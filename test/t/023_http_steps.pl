# 023_http_steps.pl
#
# HTTP steps (workflows.http()) against a loopback test server
# (test/http_server.pl), and step kinds of a plugin (test/plugin):
#   - the workflows_http grant, secrets that reach the server but never
#     status(), the tables' readable columns or the server log;
#   - JSON in and out, Idempotency-Key, retries on 5xx and 429 with
#     Retry-After, 4xx failing at once (or retried when listed), timeouts,
#     redirects (not followed; followed and checked again), a body over
#     workflows.max_output_size;
#   - refusals before any connection: loopback, private, link-local
#     (metadata) and unspecified addresses, a name resolving to loopback,
#     hosts not in workflows.http_allowed_hosts;
#   - malformed requests refused at the call;
#   - SIGKILL of the executor while the server holds the response: the
#     attempt is recorded as interrupted and the retry carries the same
#     Idempotency-Key;
#   - an in-transaction and an out-of-transaction kind of the test plugin;
#   - a workflow concurrency limit above the fast path's slack, exact with
#     both paths taking slots.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use FindBin;
use IPC::Run;
use Time::HiRes qw(time sleep);

my $dir = PostgreSQL::Test::Utils::tempdir;
my $server = IPC::Run::start(
	[ 'perl', "$FindBin::Bin/../http_server.pl", "$dir/port", "$dir/requests" ],
	'>', "$dir/server.out", '2>&1');
for (1 .. 100) { last if -s "$dir/port"; sleep 0.1; }
my $port = PostgreSQL::Test::Utils::slurp_file("$dir/port");
chomp $port;
ok($port =~ /^\d+$/, "test server listens on 127.0.0.1:$port");
my $base = "http://127.0.0.1:$port";

# what the server saw
sub requests
{
	my @r;
	open(my $f, '<', "$dir/requests") or return ();
	while (<$f>) { my $j = decode_json($_); push @r, $j if exists $j->{n}; }
	return @r;
}

sub connections
{
	my $n = 0;
	open(my $f, '<', "$dir/requests") or return 0;
	while (<$f>) { $n++ if /"connection"/; }
	return $n;
}

my $node = PostgreSQL::Test::Cluster->new('http_steps');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'workflows,wf_test_kinds'
workflows.max_workers = 2
workflows.http_allowed_hosts = '127.0.0.1'
workflows.log_level = all
max_worker_processes = 16
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION workflows;
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
GRANT CREATE ON SCHEMA public TO alice, bob;
});

# one workflow: an HTTP step made of the instance's params
$node->safe_psql('postgres', q{
SET ROLE alice;
CREATE FUNCTION call_http(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.http('call', event->'payload'->'request', event->'payload'->'config');
END $$;
SELECT workflows.register('call_http', 'call_http(jsonb)');
});

my $n = 0;
# create an instance as alice and return its id
sub create
{
	my ($request, $config) = @_;
	my $id = 'i' . ++$n;
	my $params = encode_json({ request => $request, config => $config });
	$node->safe_psql('postgres',
		"SET ROLE alice; SELECT workflows.create('call_http', \$p\$$params\$p\$::jsonb, '$id')");
	return $id;
}

sub wait_final
{
	my ($id) = @_;
	$node->poll_query_until('postgres',
		"SELECT status IN ('complete', 'errored', 'terminated') FROM workflows.instances WHERE id = '$id'")
	  or diag("instance $id did not finish");
	return decode_json($node->safe_psql('postgres', "SELECT workflows.status('$id')"));
}

sub run
{
	my $id = create(@_);
	return wait_final($id);
}

# ---- the grant ----
{
	my $before = scalar(requests());
	my $doc = run({ url => "$base/echo" });
	is($doc->{status}, 'errored', 'a role without workflows_http: the instance errors');
	is($doc->{error}{sqlstate}, '42501', '... with 42501');
	like($doc->{error}{message}, qr/permission denied to use http steps/, '... saying why');
	is(scalar(requests()), $before, '... and nothing was sent');
	$node->safe_psql('postgres', 'GRANT workflows_http TO alice');
}

# ---- secrets ----
my $secret = 's3cr3t-T0KEN-' . int(rand(1e9));
{
	$node->safe_psql('postgres', "SET ROLE alice; SELECT workflows.set_secret('api', '$secret')");
	my $doc = run({ url => "$base/text",
					headers => { Authorization => { secret => 'api' }, 'X-Plain' => 'visible' } });
	is($doc->{status}, 'complete', 'a request with a secret header completes');
	is($doc->{output}{body}, 'hello', 'a text body comes back as text');
	my ($req) = grep { $_->{path} eq '/text' } requests();
	is($req->{headers}{authorization}, $secret, 'the server received the secret value');
	is($req->{headers}{'x-plain'}, 'visible', '... and the plain header');
	my $status = $node->safe_psql('postgres', "SELECT workflows.status('i2')");
	unlike($status, qr/\Q$secret\E/, 'status() never shows the secret value');
	like($status, qr/"secret": "api"/, '... only its name');
	my $tables = $node->safe_psql('postgres',
		"SELECT string_agg(s::text, ' ') FROM workflows.steps s WHERE instance_id = 'i2'");
	unlike($tables, qr/\Q$secret\E/, 'the step row does not hold it');
	my ($ok, $out, $err) = $node->psql('postgres', 'SET ROLE alice; SELECT * FROM workflows._secrets');
	like($err, qr/permission denied/, 'nobody reads the secrets table');
	is($node->safe_psql('postgres', 'SET ROLE alice; SELECT string_agg(name, \',\') FROM workflows.secrets'),
		'api', 'workflows.secrets lists the names of my secrets');
	is($node->safe_psql('postgres', 'SET ROLE bob; SELECT count(*) FROM workflows.secrets'),
		'0', '... and not those of others');
	is($node->safe_psql('postgres',
		"SELECT details->>'name' FROM workflows.audit WHERE action = 'set_secret'"),
		'api', 'set_secret is audited, by name');
	my $missing = run({ url => "$base/text", headers => { Authorization => { secret => 'nope' } } },
		{ retries => { limit => 0 } });
	is($missing->{error}{sqlstate}, '42704', 'a missing secret fails the attempt with 42704');
	unlike($missing->{error}{message}, qr/\Q$secret\E/, '... without showing any value');
}

# ---- JSON in and out, the idempotency key ----
{
	my $doc = run({ method => 'POST', url => "$base/echo?x=1", body => { amount => 100 } });
	is($doc->{status}, 'complete', 'POST with a JSON body completes');
	my $out = $doc->{output};
	is($out->{status}, 200, 'the result has the status');
	is($out->{headers}{'content-type'}, 'application/json', '... the headers, by lower-case name');
	is($out->{body}{method}, 'POST', '... and the JSON body, parsed');
	is($out->{body}{body}, '{"amount": 100}', 'the request body was sent as JSON');
	is($out->{body}{headers}{'content-type'}, 'application/json', '... with its content type');
	is($out->{body}{headers}{'idempotency-key'}, "$doc->{id}/call",
		'every request carries Idempotency-Key: <instance id>/<step key>');
	is($doc->{steps}[0]{attempts}[0]{httpStatus}, 200, 'status() shows the attempt\'s HTTP status');
	is($doc->{steps}[0]{request}{method}, 'POST', '... and the request');
}

# ---- retries ----
{
	my $doc = run({ url => "$base/flaky/a?fail=2&code=503" },
		{ retries => { limit => 3, delay => 50, backoff => 'constant' } });
	is($doc->{status}, 'complete', '503, 503, then 200: complete');
	my @att = @{ $doc->{steps}[0]{attempts} };
	is(scalar(@att), 3, '... after three attempts');
	is_deeply([ map { $_->{httpStatus} } @att ], [ 503, 503, 200 ], '... each with its status');
	is($att[0]{error}{sqlstate}, 'WF010', 'a failed HTTP status is WF010');

	$doc = run({ url => "$base/retry-after/a?secs=2" },
		{ retries => { limit => 3, delay => 50 } });
	is($doc->{status}, 'complete', '429 with Retry-After, then 200');
	@att = @{ $doc->{steps}[0]{attempts} };
	is($att[0]{retryAfterMs}, 2000, 'the attempt shows Retry-After');
	my $gap = $node->safe_psql('postgres', qq{
		SELECT extract(epoch FROM b.started_at - a.ended_at) FROM workflows.attempts a, workflows.attempts b
		 WHERE a.instance_id = '$doc->{id}' AND b.instance_id = a.instance_id AND a.attempt = 1 AND b.attempt = 2});
	cmp_ok($gap, '>=', 1.9, 'the retry waited for Retry-After, not the 50 ms delay');

	$doc = run({ url => "$base/status/404" }, { retries => { limit => 3, delay => 50 } });
	is($doc->{status}, 'errored', '404 fails the step at once');
	is(scalar(@{ $doc->{steps}[0]{attempts} }), 1, '... after one attempt');
	is($doc->{error}{sqlstate}, 'WF010', '... with WF010');
	like($doc->{error}{message}, qr/returned status 404/, '... naming the status');

	$doc = run({ url => "$base/status/409", retryOn => [409] }, { retries => { limit => 1, delay => 50 } });
	is(scalar(@{ $doc->{steps}[0]{attempts} }), 2, 'a status listed in retryOn is retried');

	$doc = run({ url => "$base/delay?ms=3000", timeout => '300 milliseconds' }, { retries => { limit => 0 } });
	is($doc->{error}{sqlstate}, 'WF003', 'a response slower than the timeout: WF003');
}

# ---- redirects and sizes ----
{
	my $doc = run({ url => "$base/redirect?to=/echo" });
	is($doc->{output}{status}, 302, 'a redirect is not followed by default');
	is($doc->{output}{headers}{location}, '/echo', '... its Location is in the result');
	$doc = run({ url => "$base/redirect?to=/echo", followRedirects => JSON::PP::true });
	is($doc->{output}{body}{path}, '/echo', 'followRedirects follows it');
	my $conns = connections();
	$doc = run({ url => "$base/redirect?to=http://10.0.0.1/", followRedirects => JSON::PP::true });
	is($doc->{error}{sqlstate}, '42501', 'a redirect to a host not allowed is refused');
	$doc = run({ url => "$base/big?bytes=2000000" });
	is($doc->{error}{sqlstate}, 'WF007', 'a body over workflows.max_output_size fails with WF007');
	$doc = run({ url => "$base/binary" });
	ok(defined $doc->{output}{bodyBase64}, 'a body that is not text comes back as bodyBase64');
}

# ---- refused before connecting ----
{
	my $doc = run({ url => "http://localhost:$port/echo" });
	is($doc->{error}{sqlstate}, '42501', 'a host not in workflows.http_allowed_hosts is refused');
	like($doc->{error}{message}, qr/are not allowed/, '... at the call');

	# a restart, not a reload: the executors check the hosts, and a running
	# executor reads a reloaded file when it gets round to it -- no fixed
	# pause makes sure of that on a loaded machine
	$node->safe_psql('postgres', "ALTER SYSTEM SET workflows.http_allowed_hosts = '*'");
	$node->restart;
	my $conns = connections();
	my %want = (
		"$base/echo" => qr/loopback/,
		"http://localhost:$port/echo" => qr/loopback/,
		"http://[::1]:$port/echo" => qr/loopback/,
		"http://[::ffff:127.0.0.1]:$port/echo" => qr/loopback/,
		'http://10.1.2.3/' => qr/private/,
		'http://192.168.1.1/' => qr/private/,
		'http://169.254.169.254/latest/meta-data/' => qr/link-local/,
		"http://0.0.0.0:$port/" => qr/unspecified/);
	for my $url (sort keys %want)
	{
		my $d = run({ url => $url }, { retries => { limit => 0 } });
		is($d->{error}{sqlstate}, '42501', "with \"*\": $url is refused");
		like($d->{error}{message}, $want{$url}, '... saying which kind of address');
	}
	is(connections(), $conns, 'no refused request reached the server, not even its connection');
	$node->safe_psql('postgres', "ALTER SYSTEM SET workflows.http_allowed_hosts = '127.0.0.1'");
	$node->restart;
}

# ---- malformed requests: refused at the call, nothing sent ----
{
	my $before = scalar(requests());
	my @bad = (
		[ 'not an object', [1] ],
		[ 'no url', { method => 'GET' } ],
		[ 'ftp', { url => 'ftp://127.0.0.1/' } ],
		[ 'method', { url => "$base/echo", method => 'BREW' } ],
		[ 'unknown key', { url => "$base/echo", verb => 'GET' } ],
		[ 'header CRLF', { url => "$base/echo", headers => { 'X-A' => "a\r\nX-Injected: 1" } } ],
		[ 'header name', { url => "$base/echo", headers => { 'X A' => 'a' } } ],
		[ 'idempotency key', { url => "$base/echo", headers => { 'Idempotency-Key' => 'mine' } } ],
		[ 'GET body', { url => "$base/echo", body => 'x' } ],
		[ 'timeout', { url => "$base/echo", timeout => 'soon' } ],
		[ 'retryOn', { url => "$base/echo", retryOn => [200] } ],
		[ 'secret name', { url => "$base/echo", headers => { A => { secret => 'a b' } } } ]);
	for my $b (@bad)
	{
		my $d = run($b->[1]);
		is($d->{error}{sqlstate}, '22023', "malformed request ($b->[0]): 22023");
	}
	is(scalar(requests()), $before, 'none of them sent anything');
}

# ---- a plugin's kinds ----
{
	$node->safe_psql('postgres', q{
SET ROLE alice;
CREATE FUNCTION use_plugin(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE a jsonb; b jsonb;
BEGIN
    a := workflows.plugin_step('up', 'upper', '{"text": "abc"}');
    b := workflows.plugin_step('wait', 'timer', '{"ms": 200}');
    RETURN jsonb_build_object('a', a, 'b', b);
END $$;
CREATE FUNCTION use_unknown(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN workflows.plugin_step('x', 'no_such_kind', '{}');
END $$;
SELECT workflows.register('use_plugin', 'use_plugin(jsonb)');
SELECT workflows.register('use_unknown', 'use_unknown(jsonb)');
SELECT workflows.create('use_plugin', '{}', 'plugin1');
SELECT workflows.create('use_unknown', '{}', 'plugin2');
});
	my $doc = wait_final('plugin1');
	is_deeply($doc->{output}, { a => { upper => 'ABC', role => 'alice' }, b => { waited => 200 } },
		"a plugin's in-transaction kind ran as the owner, its out-of-transaction kind ended");
	$doc = wait_final('plugin2');
	is($doc->{error}{sqlstate}, '42704', 'an unknown kind: 42704');
}

# ---- many at once ----
{
	my @ids = map { create({ url => "$base/delay?ms=500" }) } 1 .. 40;
	wait_final($_) for @ids;
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.instances WHERE id IN ('" . join("','", @ids) . "') AND status = 'complete'"),
		'40', '40 slow requests at once all complete');
}

# ---- a workflow concurrency limit above the fast path's slack ----
# With 2 executors, a limit of 100 is far enough from the slack (2 x 33)
# that the first instances take their slots on the fast path (in the
# transaction that runs them, written down when the tick ends) and the
# rest on the exact path: 160 instances whose calls take 3 s each.  The
# calls in flight at once, from their attempts' own times, must reach the
# limit and never pass it.
{
	$node->safe_psql('postgres', q{
SET ROLE alice;
SELECT workflows.register('wide_http', 'call_http(jsonb)');
SELECT workflows.set_flow_control('wide_http', '{"concurrency": {"limit": 100}}');
});
	$node->safe_psql('postgres', qq{
SET ROLE alice;
SELECT count(*) FROM workflows.create_batch('wide_http',
    (SELECT jsonb_agg(jsonb_build_object('id', 'wide-' || g,
                      'params', jsonb_build_object('request', jsonb_build_object('url', '$base/delay?ms=3000'))))
       FROM generate_series(1, 160) g));
});
	$node->poll_query_until('postgres',
		"SELECT count(*) = 160 FROM workflows.instances WHERE workflow = 'wide_http' AND status = 'complete'")
	  or diag('the instances under a limit of 100 did not finish');
	is($node->safe_psql('postgres', q{
		SELECT max(n) FROM (SELECT (SELECT count(*) FROM workflows.attempts b
		                             WHERE b.instance_id LIKE 'wide-%'
		                               AND b.started_at <= a.started_at AND b.ended_at > a.started_at) AS n
		                      FROM workflows.attempts a WHERE a.instance_id LIKE 'wide-%') x}),
		'100', 'a limit of 100: 100 calls in flight at once, never more (fast and exact paths together)');
}

# ---- a step-level concurrency limit holds its place while the call is in flight ----
{
	my @ids = map { create({ url => "$base/delay?ms=300" },
						   { concurrency => { limit => 2, key => 'slow-api' } }) } 1 .. 8;
	wait_final($_) for @ids;
	my $list = "'" . join("','", @ids) . "'";
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM workflows.instances WHERE id IN ($list) AND status = 'complete'"),
		'8', 'HTTP steps under a step concurrency limit all complete');
	is($node->safe_psql('postgres', qq{
		SELECT max(n) FROM (SELECT (SELECT count(*) FROM workflows.attempts b
		                             WHERE b.instance_id IN ($list)
		                               AND b.started_at <= a.started_at AND b.ended_at > a.started_at) AS n
		                      FROM workflows.attempts a WHERE a.instance_id IN ($list)) x}),
		'2', '... and never more than 2 calls were in flight at once');
}

# ---- SIGKILL of the executor while the server holds the response ----
{
	my $id = create({ url => "$base/delay?ms=4000", timeout => '6 seconds' },
		{ retries => { limit => 2, delay => 100 } });
	for (1 .. 100) { last if grep { $_->{path} =~ m{^/delay\?ms=4000} } requests(); sleep 0.1; }
	my $doc = decode_json($node->safe_psql('postgres', "SELECT workflows.status('$id')"));
	is($doc->{steps}[0]{status}, 'calling', 'status() shows the step calling');
	is($doc->{status}, 'running', '... and the instance running');
	my $pid = $node->safe_psql('postgres', 'SELECT pid FROM workflows.executors WHERE calls > 0');
	ok($pid =~ /^\d+$/, 'workflows.executors shows the executor with a call in flight');
	kill 'KILL', $pid;
	$doc = wait_final($id);
	is($doc->{status}, 'complete', 'after SIGKILL the instance completes');
	my @keys = map { $_->{headers}{'idempotency-key'} } grep { $_->{path} =~ m{^/delay\?ms=4000} } requests();
	is(scalar(@keys), 2, 'the request was made again');
	is($keys[0], "$id/call", '... with the Idempotency-Key');
	is($keys[1], $keys[0], '... the same both times');
	my @att = @{ $doc->{steps}[0]{attempts} };
	is($att[0]{error}{sqlstate}, 'WF008', 'the killed attempt is recorded as interrupted');
	ok($att[1]{success}, '... and the next one succeeded');
}

# nothing in the server log showed the secret, but the statement that set
# it (logged by log_statement = all, which the test cluster sets)
my @lines = grep { !/statement: SELECT workflows.set_secret/ }
  split /\n/, PostgreSQL::Test::Utils::slurp_file($node->logfile);
ok(!(grep { /\Q$secret\E/ } @lines), 'the secret never reached the server log');

$server->kill_kill;
$node->stop;
done_testing();
