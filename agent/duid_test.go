package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

func TestDUIDFromMachineID(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a", "0123456789abcdef0123456789abcdef\n")
	b := write("b", "fedcba9876543210fedcba9876543210\n")
	d1, err := DUIDFromMachineID(a)
	if err != nil {
		t.Fatal(err)
	}
	d1again, _ := DUIDFromMachineID(a)
	d2, _ := DUIDFromMachineID(b)
	raw := d1.ToBytes()
	if len(raw) != 18 || raw[0] != 0 || raw[1] != 4 {
		t.Fatalf("DUID %x: want type 4 (DUID-UUID, RFC 6355) with 16 octets", raw)
	}
	if raw[2+6]>>4 != 4 || raw[2+8]>>6 != 2 {
		t.Errorf("UUID %x is not an RFC 9562 version 4 UUID", raw[2:])
	}
	if !bytes.Equal(raw, d1again.ToBytes()) {
		t.Error("the same machine ID gave two DUIDs")
	}
	if bytes.Equal(raw, d2.ToBytes()) {
		t.Error("two machine IDs (two clones) gave the same DUID")
	}
	if bytes.Contains(raw, []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab}) {
		t.Error("the DUID reveals the machine ID")
	}
	for name, content := range map[string]string{"empty": "", "short": "0123", "not hex": "zz23456789abcdef0123456789abcdef"} {
		if _, err := DUIDFromMachineID(write(name, content)); !errors.Is(err, ErrNoMachineID) {
			t.Errorf("%s machine ID: err = %v, want ErrNoMachineID", name, err)
		}
	}
	if _, err := DUIDFromMachineID(filepath.Join(dir, "missing")); !errors.Is(err, ErrNoMachineID) {
		t.Errorf("missing machine ID: err = %v, want ErrNoMachineID", err)
	}
}

func TestParseDUID(t *testing.T) {
	d, err := ParseDUID("00:03:00:01:02:42:ac:11:00:02")
	if err != nil {
		t.Fatal(err)
	}
	if ll, ok := d.(*dhcpv6.DUIDLL); !ok || ll.LinkLayerAddr.String() != "02:42:ac:11:00:02" {
		t.Errorf("ParseDUID = %#v, want DUID-LL 02:42:ac:11:00:02", d)
	}
	for _, bad := range []string{"", "00", "xyz", "0004" + string(bytes.Repeat([]byte("ab"), 200))} {
		if _, err := ParseDUID(bad); err == nil {
			t.Errorf("ParseDUID(%q) accepted", bad)
		}
	}
}
