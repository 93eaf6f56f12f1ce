// Package ddns keeps DNS in step with the reference server's bindings:
// RFC 2136 dynamic updates, signed with TSIG (RFC 8945), to one primary
// server.
//
// For a binding whose client sent a name (Client FQDN, RFC 4704) inside a
// configured forward zone, the name gets an AAAA record for the address;
// for an address inside a configured reverse zone (ip6.arpa), a PTR record
// to the name. Both go when the binding is deregistered, expires or moves
// to another client (or name).
//
// Conflicts follow RFC 4703 with a DHCID RR (RFC 4701: SHA-256 of the
// client's DUID and the name) beside the AAAA records: a name is added
// only if it does not exist, or if its DHCID is this client's; a name held
// by another client, or entered without a DHCID by an operator, is not
// taken (counted and logged). Unlike RFC 4703 §5.3.2, which replaces the
// address RRset, an update adds or removes one AAAA RR, since one host
// registers several addresses (stable, temporary, ULA) under one name.
// Removal deletes the address's AAAA only under the client's DHCID, and
// the DHCID once no address is left (§5.5). PTRs carry no DHCID: the
// address is the registering client's, so its PTR is replaced outright.
// The FQDN option's flags (S, O, N) are not recorded by the server and
// not consulted: the server always updates both records.
//
// Updates never wait on the caller: Enqueue appends to an intake and one
// goroutine (Run) merges changes per address (the latest wanted state,
// every name to remove) and sends them one address at a time. A failure
// is retried with capped exponential backoff (an address whose update was
// refused waits alone; a server that does not answer holds back every
// address). Pending work is written to a Journal, so it survives a
// restart; every step is idempotent, so work done again is harmless.
package ddns
