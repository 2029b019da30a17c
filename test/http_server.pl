#!/usr/bin/perl
# test/http_server.pl -- a small HTTP/1.1 server for the tests and the
# benchmark of HTTP steps.  Loopback only; one process; select() over
# non-blocking sockets, so it holds hundreds of slow responses at once.
#
#   perl test/http_server.pl PORTFILE LOGFILE
#
# Listens on 127.0.0.1 (an ephemeral port, written to PORTFILE once it
# listens; its process id to PORTFILE.pid) and appends one JSON line per request to LOGFILE:
# {"n", "method", "path", "headers": {...}, "body"}.  Connections are
# counted in LOGFILE too ({"connection": n}).  Routes:
#
#   /echo                   200, JSON: method, path, query, headers, body
#   /text                   200, text/plain "hello"
#   /status/N               status N, JSON {"status": N}
#   /flaky/KEY?fail=N&code=C  C for the first N requests of KEY, then 200
#                           with {"calls": count}
#   /retry-after/KEY?secs=S 429 with Retry-After: S the first time, then 200
#   /delay?ms=N             200 with {"delayed": N} after N ms
#   /redirect?to=URL&code=C C (302) with Location: URL
#   /big?bytes=N            200, text/plain, N bytes
#   /binary                 200, application/octet-stream, bytes that are not text
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);
use Errno qw(EAGAIN EWOULDBLOCK);

my ($portfile, $logfile) = @ARGV;
die "usage: $0 PORTFILE LOGFILE\n" unless $portfile && $logfile;

my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                   Listen => 1024, ReuseAddr => 1, Blocking => 0)
    or die "listen: $!";
open(my $log, '>>', $logfile) or die "$logfile: $!";
$log->autoflush(1);
{
    open(my $pp, '>', "$portfile.pid") or die;
    print $pp "$$\n";
    close $pp;
    open(my $pf, '>', "$portfile.tmp") or die;
    print $pf $listen->sockport, "\n";
    close $pf;
    rename "$portfile.tmp", $portfile;
}

my $sel = IO::Select->new($listen);
my %conn;          # fileno => {sock, in, out, due, pending}
my %counts;        # per key, for /flaky and /retry-after
my $nreq = 0;
my $nconn = 0;
$SIG{TERM} = sub { exit 0 };
$SIG{PIPE} = 'IGNORE';

sub jstr {
    my $s = shift;
    $s =~ s/(["\\])/\\$1/g;
    $s =~ s/([\x00-\x1f])/sprintf("\\u%04x", ord($1))/ge;
    return "\"$s\"";
}

sub jobj {
    my $h = shift;
    return '{' . join(', ', map { jstr($_) . ': ' . $h->{$_} } sort keys %$h) . '}';
}

sub respond {
    my ($c, $status, $type, $body, $extra, $delay) = @_;
    my %reason = (200 => 'OK', 301 => 'Moved Permanently', 302 => 'Found', 303 => 'See Other',
                  307 => 'Temporary Redirect', 308 => 'Permanent Redirect', 400 => 'Bad Request',
                  404 => 'Not Found', 408 => 'Request Timeout', 429 => 'Too Many Requests',
                  500 => 'Internal Server Error', 503 => 'Service Unavailable');
    my $head = "HTTP/1.1 $status " . ($reason{$status} // 'Status') . "\r\n"
        . "Content-Type: $type\r\nContent-Length: " . length($body) . "\r\n"
        . ($extra // '') . "Connection: keep-alive\r\n\r\n";
    push @{$c->{pending}}, { at => time + ($delay // 0), data => $head . $body };
}

sub handle {
    my ($c, $method, $target, $headers, $body) = @_;
    my ($path, $query) = split /\?/, $target, 2;
    my %q;
    for (split /&/, $query // '') {
        my ($k, $v) = split /=/, $_, 2;
        $v //= '';
        $v =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
        $q{$k} = $v;
    }
    my %hj = map { $_ => jstr($headers->{$_}) } keys %$headers;
    $nreq++;
    print $log jobj({ n => $nreq, method => jstr($method), path => jstr($target),
                      headers => jobj(\%hj), body => jstr($body) }), "\n";

    if ($path eq '/echo') {
        respond($c, 200, 'application/json',
                jobj({ method => jstr($method), path => jstr($path), query => jstr($query // ''),
                       headers => jobj(\%hj), body => jstr($body) }));
    } elsif ($path eq '/text') {
        respond($c, 200, 'text/plain', 'hello');
    } elsif ($path =~ m{^/status/(\d+)$}) {
        respond($c, $1, 'application/json', "{\"status\": $1}");
    } elsif ($path =~ m{^/flaky/(\w+)$}) {
        my $n = ++$counts{"flaky/$1"};
        if ($n <= ($q{fail} // 1)) {
            respond($c, $q{code} // 500, 'application/json', "{\"failed\": $n}");
        } else {
            respond($c, 200, 'application/json', "{\"calls\": $n}");
        }
    } elsif ($path =~ m{^/retry-after/(\w+)$}) {
        my $n = ++$counts{"retry/$1"};
        if ($n == 1) {
            respond($c, 429, 'text/plain', 'slow down', "Retry-After: " . ($q{secs} // 1) . "\r\n");
        } else {
            respond($c, 200, 'application/json', "{\"calls\": $n}");
        }
    } elsif ($path eq '/delay') {
        my $ms = $q{ms} // 1000;
        respond($c, 200, 'application/json', "{\"delayed\": $ms}", undef, $ms / 1000);
    } elsif ($path eq '/redirect') {
        respond($c, $q{code} // 302, 'text/plain', 'moved', "Location: $q{to}\r\n");
    } elsif ($path eq '/big') {
        respond($c, 200, 'text/plain', 'x' x ($q{bytes} // 1000));
    } elsif ($path eq '/binary') {
        respond($c, 200, 'application/octet-stream', "\x00\xff\xfe\x01");
    } else {
        respond($c, 404, 'application/json', '{"error": "no such route"}');
    }
}

# parse as many complete requests as the buffer holds
sub parse {
    my $c = shift;
    while (1) {
        my $end = index($c->{in}, "\r\n\r\n");
        return if $end < 0;
        my $head = substr($c->{in}, 0, $end);
        my ($line, @lines) = split /\r\n/, $head;
        my ($method, $target) = split / /, $line;
        my %h;
        for (@lines) {
            my ($k, $v) = split /:\s*/, $_, 2;
            $h{lc $k} = $v // '';
        }
        my $len = $h{'content-length'} // 0;
        return if length($c->{in}) < $end + 4 + $len;
        my $body = substr($c->{in}, $end + 4, $len);
        $c->{in} = substr($c->{in}, $end + 4 + $len);
        handle($c, $method, $target, \%h, $body);
    }
}

while (1) {
    my $now = time;
    my $wait = 1;
    for my $c (values %conn) {
        for my $p (@{$c->{pending}}) {
            my $d = $p->{at} - $now;
            $wait = $d if $d < $wait;
        }
    }
    $wait = 0 if $wait < 0;
    my @ready = $sel->can_read($wait);
    for my $s (@ready) {
        if ($s == $listen) {
            while (my $n = $listen->accept) {
                $n->blocking(0);
                $conn{fileno $n} = { sock => $n, in => '', pending => [] };
                $sel->add($n);
                $nconn++;
                print $log "{\"connection\": $nconn}\n";
            }
            next;
        }
        my $c = $conn{fileno $s};
        my $got = sysread($s, my $buf, 65536);
        if (!defined $got) {
            next if $! == EAGAIN || $! == EWOULDBLOCK;
            $got = 0;
        }
        if ($got == 0) {
            $sel->remove($s);
            delete $conn{fileno $s};
            close $s;
            next;
        }
        $c->{in} .= $buf;
        parse($c);
    }
    # send what is due, in order per connection
    $now = time;
    for my $c (values %conn) {
        while (@{$c->{pending}} && $c->{pending}[0]{at} <= $now) {
            my $p = shift @{$c->{pending}};
            my $s = $c->{sock};
            $s->blocking(1);
            syswrite($s, $p->{data});
            $s->blocking(0);
        }
    }
}
