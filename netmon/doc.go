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
// the consumer has been told, and queues only the keys (link, address) on
// which they differ. Next computes the event from that difference. So the kernel reader never blocks on the consumer, changes to
// one address coalesce into one event with the latest state, identical
// RTM_NEWADDR bursts (the kernel emits several per RA and per DAD
// completion) produce nothing, and memory is bounded by the size of the
// kernel's state. If more than Options.QueueSize keys wait, the queue is
// dropped and the next Next diffs everything.
//
// For the consumer:
//   - Next is meant for one consumer goroutine; Snapshot and Lookup may be
//     called from anywhere.
//   - Events for one key come in order; across keys, in the order the keys
//     first changed (a new link before its addresses; the kernel removes
//     addresses before their link).
//   - A link that becomes usable (up with carrier) after being down is
//     reported as LinkChanged even if the consumer missed the down: discover
//     afresh (RFC 9686 §4.2). Its RA flags then read false until an RA is
//     processed on the new attachment (RAFlags follows).
//   - An address removed and re-added before the consumer looked is
//     reported as AddrRemoved then AddrAdded.
//   - Every RA refreshes SLAAC lifetimes; an AddrUpdated follows whenever an
//     expiry time moved by more than Options.LifetimeSlack (with a 1 s RA
//     interval, every other RA; on real networks, per RA). The registrar
//     applies its own tolerance (RFC 9686 §4.6, erratum 8600: 3 s).
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
