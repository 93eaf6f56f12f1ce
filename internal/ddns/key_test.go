package ddns

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

const keygenOutput = `key "test-key." {
	algorithm hmac-sha256;
	secret "ZF0scXYfg1rOSccxtM2FWJ22HyuFoC8alOXGvhveJv8=";
};
`

func TestParseKey(t *testing.T) {
	want := Key{Name: "test-key.", Algorithm: dns.HmacSHA256, Secret: "ZF0scXYfg1rOSccxtM2FWJ22HyuFoC8alOXGvhveJv8="}
	for _, tc := range []struct {
		name, in string
		want     Key
		err      string
	}{
		{name: "tsig-keygen", in: keygenOutput, want: want},
		{name: "one line, unquoted, no dot, comments", in: `# made by hand
key Test-Key { /* inline */ algorithm HMAC-SHA256; // trailing
secret "ZF0scXYfg1rOSccxtM2FWJ22HyuFoC8alOXGvhveJv8="; };`, want: want},
		{name: "sha512", in: `key "k" { algorithm hmac-sha512; secret "AAAA"; };`,
			want: Key{Name: "k.", Algorithm: dns.HmacSHA512, Secret: "AAAA"}},
		{name: "empty", in: "# nothing\n", err: "no key clause"},
		{name: "two keys", in: keygenOutput + keygenOutput, err: "2 key clauses"},
		{name: "md5", in: `key "k" { algorithm hmac-md5; secret "AAAA"; };`, err: `algorithm "hmac-md5"`},
		{name: "no algorithm", in: `key "k" { secret "AAAA"; };`, err: `algorithm ""`},
		{name: "bad secret", in: `key "k" { algorithm hmac-sha256; secret "not base64!"; };`, err: "not base64"},
		{name: "no secret", in: `key "k" { algorithm hmac-sha256; };`, err: "not base64"},
		{name: "unknown statement", in: `key "k" { algorithm hmac-sha256; secret "AAAA"; foo bar; };`, err: `unknown statement "foo"`},
		{name: "missing semicolon", in: `key "k" { algorithm hmac-sha256 secret "AAAA"; };`, err: `want ";"`},
		{name: "unterminated", in: `key "k" { algorithm hmac-sha256; secret "AAAA`, err: "unterminated string"},
		{name: "truncated", in: `key "k" { algorithm hmac-sha256;`, err: "unexpected end"},
		{name: "options", in: `options { directory "/tmp"; };`, err: `want "key"`},
		{name: "bad name", in: `key "a..b" { algorithm hmac-sha256; secret "AAAA"; };`, err: "not a domain name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKey(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseKey: %v, want error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

// FuzzParseKey: any input parses or fails without panicking, and a key
// that parses survives being written out and read again.
func FuzzParseKey(f *testing.F) {
	f.Add(keygenOutput)
	f.Add(`key k { algorithm hmac-sha1; secret "AAAA"; }; # c`)
	f.Add(`/* x */ key "k" { };`)
	f.Add(`key "k" { algorithm "hmac-sha256"; secret AAAA; };`)
	f.Fuzz(func(t *testing.T, in string) {
		k, err := ParseKey(in)
		if err != nil {
			return
		}
		alg := ""
		for n, a := range algorithms {
			if a == k.Algorithm {
				alg = n
			}
		}
		again, err := ParseKey(fmt.Sprintf("key %q {\n\talgorithm %s;\n\tsecret %q;\n};\n", k.Name, alg, k.Secret))
		if err != nil {
			t.Fatalf("key %+v from %q does not parse again: %v", k, in, err)
		}
		if again != k {
			t.Fatalf("round trip: %+v, want %+v", again, k)
		}
	})
}

// FuzzUpdateMessages: whatever name a client sends, what qualify lets
// through is a name every update message can be built and packed with.
func FuzzUpdateMessages(f *testing.F) {
	f.Add("h1", []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
	f.Add("a.b.example.net.", []byte{0xfd, 15: 2})
	f.Add("x"+strings.Repeat(".abcdefghij", 30), []byte{15: 3})
	zones := []string{"example.net.", "8.b.d.0.1.0.0.2.ip6.arpa."}
	f.Fuzz(func(t *testing.T, name string, addr []byte) {
		if len(addr) != 16 {
			return
		}
		a := netip.AddrFrom16([16]byte(addr))
		fqdn, zone := qualify(zones[:1], name)
		if fqdn == "" {
			return
		}
		if _, ok := dns.IsDomainName(fqdn); !ok || !dns.IsSubDomain(zone, fqdn) {
			t.Fatalf("qualify(%q) = %q in %q", name, fqdn, zone)
		}
		o := Owner{Name: fqdn, DUID: addr, TTL: 60}
		rev := reverseName(a)
		for _, m := range []*dns.Msg{addNew(zone, o, a), addMine(zone, o, a), removeAddr(zone, o, a), removeDHCID(zone, o),
			setPTR(zones[1], rev, fqdn, 60), deletePTR(zones[1], rev)} {
			if _, err := m.Pack(); err != nil {
				t.Fatalf("%q: pack %v: %v", name, m, err)
			}
		}
	})
}
