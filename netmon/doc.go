// Package netmon reports what the kernel says about links and IPv6
// addresses, as typed events for the registrar.
//
// It speaks rtnetlink itself (groups RTNLGRP_LINK, RTNLGRP_IPV6_IFADDR,
// RTNLGRP_IPV6_IFINFO, RTNLGRP_IPV6_PREFIX) so that it sees IFA_PROTO,
// IFLA_INET6_FLAGS (the RA M/O flags) and RTM_NEWPREFIX, and controls the
// receive buffer and ENOBUFS handling.
//
// Model (after tailscale's netmon): Run first dumps links and addresses, then
// applies streamed messages, each of which carries its object's full state.
// Any receive error (ENOBUFS when the kernel outran us, a closed socket) or a
// clock jump leads to a fresh subscription and a full re-dump, diffed
// against the current state: nothing is lost and nothing duplicated.
//
// Events are not stored: the Monitor keeps the kernel's state and the state
// the consumer has been told, and queues only the keys (link, address,
// prefix) on which they differ. Next computes the event from that
// difference. So the kernel reader never blocks on the consumer, changes to
// one address coalesce into one event with the latest state, identical
// RTM_NEWADDR bursts (the kernel emits several per RA and per DAD
// completion) produce nothing, and memory is bounded by the size of the
// kernel's state. If more than Options.QueueSize keys wait, the queue is
// dropped and the next Next diffs everything.
//
// Lifetimes are the kernel's (IFA_CACHEINFO), never the RA's: Linux ignores
// or clamps what an RA says (RFC 4862 §5.5.3(e)). Lookup reads one address
// afresh, for the current lifetimes at each transmission.
//
// Clock jumps: Go's monotonic clock stops during suspend and ignores
// settimeofday, the wall clock does neither; a disagreement between the two
// elapsed times above Options.ClockJumpThreshold is reported as ClockJump and
// followed by a re-dump. The check runs on every received datagram and, when
// none arrive, every Options.ClockCheckInterval (one timer wakeup, two clock
// reads: the only idle cost of a Monitor).
package netmon
