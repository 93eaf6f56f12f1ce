// Package scheduler holds addrreg's timing rules as pure logic over an
// injectable [Clock]: when to retransmit, when to refresh a registration,
// and a deadline set that keeps thousands of refreshes behind one timer.
//
// Nothing here sends packets or reads the kernel; the agent feeds in
// lifetimes and acts on the times returned. It is a supported API of this
// module: every exported name may be used by other programs.
//
// # Retransmission (RFC 8415 §15)
//
// A [Retrans] holds IRT, MRT, MRC and MRD; [Retrans.Start] returns a
// [Backoff] that walks one exchange:
//
//	RT1 = IRT + RAND*IRT
//	RTn = 2*RTn-1 + RAND*RTn-1
//	if MRT != 0 && RT > MRT: RT = MRT + RAND*MRT
//
// RAND is uniform in [-0.1, +0.1] and drawn afresh for every step. The
// exchange fails once the message has been transmitted MRC times (MRC 3 =
// at most 3 sends) or once MRD has passed since the first transmission;
// the last wait is clipped so it ends at MRD. RFC 9686 §4.5 uses IRT 1 s,
// MRC 3 ([DefaultRegistration]); Information-Request uses INF_TIMEOUT 1 s
// and INF_MAX_RT 3600 s ([InformationRequest]) after a random initial delay
// of up to INF_MAX_DELAY ([InitialDelay], RFC 8415 §18.2.6).
//
// # Refresh (RFC 9686 §4.6, as published)
//
// [Policy] implements the published refresh rules, not the drafts':
//
//   - AddrRegDesyncMultiplier is chosen once, uniform in [0.9, 1.1]
//     ([NewPolicy]), so hosts that booted together drift apart.
//   - AddrRegRefreshInterval = 0.8 × current valid lifetime × multiplier,
//     optionally capped by MaxInterval (4 h reproduces draft -08's
//     min(4 h, 80 %)). Static and infinite-lifetime addresses use
//     StaticAddrRegRefreshInterval (default 4 h) instead.
//   - Every registration or refresh records NextAddrRegRefreshTime = now +
//     interval ([Policy.Registered]); that alone schedules nothing for an
//     address with a finite lifetime: if its lifetime just counts down, the
//     server's binding expires exactly when the address does.
//   - When the valid lifetime changes by more than the tolerance compared
//     with what the server was told (allowing for elapsed time), a refresh
//     is scheduled at min(now + interval, NextAddrRegRefreshTime), or at
//     once if that is past ([Policy.LifetimeChanged]). The tolerance is 3 s
//     (RFC 9686 erratum 8600, as Android does) rather than the RFC text's
//     1 %, which would refresh needlessly as lifetimes count down.
//   - Static and infinite-lifetime addresses are refreshed every
//     StaticInterval whatever happens: the agent schedules [Reg.Next] for
//     them after every registration ([Reg.Periodic]).
//   - Coalescing (MAY): when a refresh fires, the interface's other
//     addresses due within AddrRegRefreshCoalesce (60 s) go with it
//     ([Heap.DueWithin]).
//
// The refresh for a finite lifetime therefore never lands later than
// 0.8 × 1.1 = 88 % of the way from the registration to the address's expiry.
//
// Lifetimes are [time.Duration]; the wire's infinity, 0xffffffff seconds
// (RFC 8415 §21.6), maps to [Infinite] ([Lifetime] does the conversion).
//
// # Deadlines
//
// [Heap] keeps any number of keyed deadlines in a min-heap, with no timer:
// a state machine that arms one timer for its earliest wake-up holds one
// (the agent does, so an idle agent makes no periodic wake-ups).
// [Deadlines] is a Heap behind a lock and a single [Timer], armed only for
// the earliest deadline and stopped when the set is empty, for callers
// that want their due keys pushed to them.
//
// # Clocks
//
// Everything that waits takes a [Clock]. [RealClock] is the system's;
// [FakeClock] is exact and deterministic: time moves only in
// [FakeClock.Advance], which runs due timers synchronously, in deadline
// order, with the clock reading each timer's deadline.
package scheduler
