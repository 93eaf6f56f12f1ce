package ddns

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// Key is a TSIG key (RFC 8945): its name, algorithm and base64 secret.
type Key struct {
	Name      string // canonical FQDN, e.g. "addrreg."
	Algorithm string // a miekg/dns algorithm name, e.g. dns.HmacSHA256
	Secret    string // base64
}

// algorithms maps BIND's algorithm names to miekg/dns's. hmac-md5 is not
// offered: miekg/dns no longer signs with it.
var algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// ReadKeyFile reads a TSIG key in the format of BIND's tsig-keygen and
// named.conf (see ParseKey).
func ReadKeyFile(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("read TSIG key: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParseKey parses exactly one key clause as tsig-keygen writes it:
//
//	key "name" {
//		algorithm hmac-sha256;
//		secret "base64…";
//	};
//
// Comments (#, //, /* */) and any layout are allowed; the name may be
// unquoted.
func ParseKey(text string) (Key, error) {
	toks, err := tokenize(text)
	if err != nil {
		return Key{}, err
	}
	var keys []Key
	p := &keyParser{toks: toks}
	for !p.done() {
		k, err := p.key()
		if err != nil {
			return Key{}, err
		}
		keys = append(keys, k)
	}
	switch len(keys) {
	case 0:
		return Key{}, errors.New("no key clause")
	case 1:
		return keys[0], nil
	}
	return Key{}, fmt.Errorf("%d key clauses: want one", len(keys))
}

type token struct {
	s      string
	quoted bool
}

func tokenize(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#' || (c == '/' && i+1 < len(s) && s[i+1] == '/'):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				return nil, errors.New("unterminated /* comment")
			}
			i += 2 + end + 2
		case c == '{' || c == '}' || c == ';':
			out = append(out, token{s: string(c)})
			i++
		case c == '"':
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				return nil, errors.New("unterminated string")
			}
			out = append(out, token{s: s[i+1 : i+1+end], quoted: true})
			i += end + 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n{};\"#", rune(s[j])) {
				j++
			}
			if j == i { // a lone '/' that starts no comment
				j++
			}
			out = append(out, token{s: s[i:j]})
			i = j
		}
	}
	return out, nil
}

type keyParser struct {
	toks []token
	i    int
}

func (p *keyParser) done() bool { return p.i >= len(p.toks) }

func (p *keyParser) next() (token, error) {
	if p.done() {
		return token{}, errors.New("unexpected end of key file")
	}
	t := p.toks[p.i]
	p.i++
	return t, nil
}

func (p *keyParser) expect(s string) error {
	t, err := p.next()
	if err != nil {
		return err
	}
	if t.quoted || t.s != s {
		return fmt.Errorf("want %q, got %q", s, t.s)
	}
	return nil
}

func (p *keyParser) key() (Key, error) {
	if err := p.expect("key"); err != nil {
		return Key{}, err
	}
	name, err := p.next()
	if err != nil {
		return Key{}, err
	}
	if !name.quoted && (name.s == "{" || name.s == ";" || name.s == "}") {
		return Key{}, errors.New("key without a name")
	}
	var k Key
	if _, ok := dns.IsDomainName(name.s); !ok || !keyName(name.s) {
		return Key{}, fmt.Errorf("key name %q: not a domain name", name.s)
	}
	k.Name = dns.CanonicalName(name.s)
	if err := p.expect("{"); err != nil {
		return Key{}, err
	}
	var alg, secret string
	for {
		t, err := p.next()
		if err != nil {
			return Key{}, err
		}
		if !t.quoted && t.s == "}" {
			break
		}
		v, err := p.next()
		if err != nil {
			return Key{}, err
		}
		if err := p.expect(";"); err != nil {
			return Key{}, err
		}
		switch t.s {
		case "algorithm":
			alg = strings.ToLower(v.s)
		case "secret":
			secret = v.s
		default:
			return Key{}, fmt.Errorf("key %s: unknown statement %q", k.Name, t.s)
		}
	}
	if err := p.expect(";"); err != nil {
		return Key{}, err
	}
	a, ok := algorithms[strings.TrimSuffix(alg, ".")]
	if !ok {
		return Key{}, fmt.Errorf("key %s: algorithm %q: want one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512", k.Name, alg)
	}
	raw, err := base64.StdEncoding.DecodeString(secret)
	if err != nil || len(raw) == 0 {
		return Key{}, fmt.Errorf("key %s: secret is not base64", k.Name)
	}
	k.Algorithm, k.Secret = a, base64.StdEncoding.EncodeToString(raw)
	return k, nil
}

// keyName reports whether s is a plain key name: letters, digits, '-',
// '_' and dots, no escapes.
func keyName(s string) bool {
	if s == "" || s == "." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
