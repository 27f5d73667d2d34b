#!/usr/bin/perl
# A real caller (Net::SIP): dials TO from the local address LEG, sends the
# PCMU file IN as RTP, saves what comes back to OUT, hangs up. With IN "-"
# it sends nothing and listens for 2 s (a prompt), saving what it hears.
# Prints "FINAL <code>" with the final answer to the INVITE.
#   perl echo_call.pl sip:6000@127.0.0.1:5071 127.0.0.1:PORT IN OUT
use strict;
use warnings;
use Net::SIP;

my ($to, $leg, $in, $out) = @ARGV;
die "usage: $0 TO LEG IN OUT\n" unless $out;
my $ua = Net::SIP::Simple->new(from => 'sip:tester@127.0.0.1', leg => $leg);
my ($final, $code, $sent) = ('', 0, 0);
my $media = $in eq '-'
	? $ua->rtp('media_recv_echo', $out, -1)
	: $ua->rtp('media_send_recv', $in, 1, $out);
my $call = $ua->invite($to,
	init_media => $media,
	cb_rtp_done => sub { $sent = 1 },
	cb_final => sub { my ($status, $self, %a) = @_; $final = $status; $code = $a{code} || 0 },
	asymetric_rtp => 0);
$ua->loop(10, \$final) unless $final;
if ($final ne 'OK') {
	print "FINAL ", ($code || 'none'), "\n";
	exit 1;
}
if ($in eq '-') {
	$ua->loop(2);
} else {
	$ua->loop(20, \$sent);
}
$ua->loop(0.5);    # the last echoes on their way back
$call->bye;
$ua->loop(2);
print "FINAL 200\n";
exit 0;
