package agent

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// appID keys the derivation of the DUID from the machine ID, so the DUID
// does not reveal /etc/machine-id and other programs deriving their own
// identifiers from it get different ones (the way systemd's
// sd_id128_get_machine_app_specific does).
var appID = []byte("addrreg DUID-UUID v1")

// ErrNoMachineID means /etc/machine-id is missing, empty or not 32 hex
// digits, so no DUID can be derived; --duid sets one by hand.
var ErrNoMachineID = errors.New("no usable machine ID")

// DUIDFromMachineID derives a DUID-UUID (RFC 6355) from the machine ID in
// path. It is computed at run time, never stored: a cloned OS image gets its
// own machine ID on first boot, and with it its own DUID.
func DUIDFromMachineID(path string) (dhcpv6.DUID, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoMachineID, err)
	}
	id, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(id) != 16 {
		return nil, fmt.Errorf("%w: %s is not 32 hex digits", ErrNoMachineID, path)
	}
	return duidFromID(id), nil
}

func duidFromID(machineID []byte) dhcpv6.DUID {
	mac := hmac.New(sha256.New, machineID)
	mac.Write(appID)
	sum := mac.Sum(nil)
	var u [16]byte
	copy(u[:], sum)
	// An RFC 9562 version 4 (random) UUID: the bits are a keyed hash.
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return &dhcpv6.DUIDUUID{UUID: u}
}

// ParseDUID reads a DUID given in hex (colons allowed), as --duid takes it.
func ParseDUID(s string) (dhcpv6.DUID, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil {
		return nil, fmt.Errorf("DUID %q is not hex: %w", s, err)
	}
	// RFC 8415 §11.1: 2 octets of type, at most 128 octets of data.
	if len(b) < 3 || len(b) > 130 {
		return nil, fmt.Errorf("DUID %q: %d octets, want 3 to 130", s, len(b))
	}
	d, err := dhcpv6.DUIDFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("DUID %q: %w", s, err)
	}
	return d, nil
}
