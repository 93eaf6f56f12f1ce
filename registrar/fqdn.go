package registrar

// ValidateFQDN reports whether name can be sent in a Client FQDN option
// (RFC 4704 §4.1, DNS wire format), so that a bad --fqdn is refused at start.
func ValidateFQDN(name string) error {
	_, err := encodeFQDN(name)
	return err
}
