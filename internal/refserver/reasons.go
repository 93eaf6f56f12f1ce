package refserver

import "errors"

// Reason is why a message was dropped. Each validation rule has its own
// Reason; its Name is the log "reason" attribute and the Counters key.
type Reason struct{ Name string }

func (r *Reason) Error() string { return r.Name }

// Drop reasons. Handle wraps them with details; use errors.Is to branch and
// ReasonName to get the counter key.
var (
	ErrTruncated         = &Reason{"truncated"}
	ErrOversized         = &Reason{"oversized"}
	ErrMalformed         = &Reason{"malformed"}
	ErrWrongType         = &Reason{"wrong_message_type"}       // a server-to-client type (Reply, ADDR-REG-REPLY, Relay-Reply …)
	ErrUnsupported       = &Reason{"unsupported_message_type"} // Solicit, Request … : address assignment is not served
	ErrRelayTooDeep      = &Reason{"relay_too_deep"}
	ErrUnknownInterface  = &Reason{"unknown_interface"} // unrelayed message on an interface not configured
	ErrNoClientID        = &Reason{"no_client_id"}      // RFC 9686 §4.2.1
	ErrHasServerID       = &Reason{"has_server_id"}     // RFC 9686 §4.2.1
	ErrNoIAAddress       = &Reason{"no_ia_address"}     // RFC 9686 §4.2.1
	ErrMultipleIAAddress = &Reason{"multiple_ia_address"}
	ErrAddressMismatch   = &Reason{"address_mismatch"} // RFC 9686 §4.2.1: IA Address ≠ source / innermost peer-address
	ErrHasORO            = &Reason{"has_oro"}          // RFC 9686 §4.2.1
	ErrBadLifetimes      = &Reason{"bad_lifetimes"}    // preferred > valid (RFC 8415 §21.6)
	ErrNotGlobal         = &Reason{"not_global_unicast"}
	ErrNotOnLink         = &Reason{"not_appropriate_to_link"} // RFC 9686 §4.2.1, RFC 8415 "appropriate to the link"
	ErrHasIA             = &Reason{"has_ia"}                  // Information-Request with IA_NA/IA_TA/IA_PD (RFC 8415 §16.12)
	ErrWrongServerID     = &Reason{"wrong_server_id"}         // Server ID that is not ours (RFC 8415 §16.12, RFC 5007 §4.2.1)
	ErrNoQuery           = &Reason{"no_lq_query"}             // LEASEQUERY without OPTION_LQ_QUERY (RFC 5007 §4.2.1)
	ErrRegistrationOff   = &Reason{"registration_disabled"}   // --no-addr-reg: ADDR-REG-INFORM dropped
	ErrTooManyBindings   = &Reason{"too_many_bindings"}       // Config.MaxBindingsPerDUID reached
	ErrRateSource        = &Reason{"rate_limited_source"}
	ErrRateDUID          = &Reason{"rate_limited_duid"}
	ErrOverloaded        = &Reason{"overloaded"} // the commit queue is full (Config.MaxQueue), or the message waited longer than Config.MaxWait: shed, not answered
	ErrDatabase          = &Reason{"database_error"}
	ErrSend              = &Reason{"send_error"}
)

// ReasonName returns the Reason name inside err, or "other".
func ReasonName(err error) string {
	var r *Reason
	if errors.As(err, &r) {
		return r.Name
	}
	return "other"
}
