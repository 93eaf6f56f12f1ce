package netmon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestClassify(t *testing.T) {
	const (
		perm  = unix.IFA_F_PERMANENT
		tmp   = unix.IFA_F_TEMPORARY
		spriv = unix.IFA_F_STABLE_PRIVACY
		tent  = unix.IFA_F_TENTATIVE
		opt   = unix.IFA_F_OPTIMISTIC
		dadf  = unix.IFA_F_DADFAILED
		depr  = unix.IFA_F_DEPRECATED
		mgmt  = unix.IFA_F_MANAGETEMPADDR
		h     = time.Hour
		inf   = Infinite
	)
	incl := ClassifyOptions{
		Include: []netip.Prefix{netip.MustParsePrefix("2001:db8:10::/48"), netip.MustParsePrefix("2001:db8:30::/48")},
		Exclude: []netip.Prefix{netip.MustParsePrefix("2001:db8:10:1::/64"), netip.MustParsePrefix("2001:db8:20::/48"), netip.MustParsePrefix("2001:db8:30::/48")},
	}
	type want struct {
		Class Class
		State State
		Reg   bool
	}
	for _, tc := range []struct {
		name  string
		ip    string
		plen  int
		flags uint32
		proto uint8
		pref  time.Duration
		valid time.Duration
		o     ClassifyOptions
		want  want
	}{
		{"SLAAC EUI-64", "2001:db8::5c60:95ff:fe2f:b2bb", 64, mgmt, ProtoKernelRA, h, 2 * h, ClassifyOptions{}, want{ClassGlobal, StatePreferred, true}},
		{"SLAAC on a kernel without IFA_PROTO", "2001:db8::5c60:95ff:fe2f:b2bb", 64, mgmt, 0, h, 2 * h, ClassifyOptions{}, want{ClassGlobal, StatePreferred, true}},
		{"temporary", "2001:db8::b679:47e5:db54:be5c", 64, tmp, 0, h, 2 * h, ClassifyOptions{}, want{ClassTemporary, StatePreferred, true}},
		{"stable privacy", "2001:db8::1234:5678:9abc:def0", 64, spriv, ProtoKernelRA, h, 2 * h, ClassifyOptions{}, want{ClassStablePrivacy, StatePreferred, true}},
		{"deprecated SLAAC still registrable", "2001:db8::1", 64, depr, ProtoKernelRA, 0, 7199 * time.Second, ClassifyOptions{}, want{ClassGlobal, StateDeprecated, true}},
		{"preferred 0 without the flag", "2001:db8::1", 64, 0, ProtoKernelRA, 0, h, ClassifyOptions{}, want{ClassGlobal, StateDeprecated, true}},
		{"valid 0", "2001:db8::1", 64, depr, ProtoKernelRA, 0, 0, ClassifyOptions{}, want{ClassGlobal, StateDeprecated, false}},
		{"ULA SLAAC", "fd12:3456:789a:1::1", 64, mgmt, ProtoKernelRA, h, 2 * h, ClassifyOptions{}, want{ClassULA, StatePreferred, true}},
		{"ULA temporary", "fd12:3456:789a:1::2", 64, tmp, 0, h, 2 * h, ClassifyOptions{}, want{ClassULA, StatePreferred, true}},
		{"ULA static", "fd00::1", 64, perm, 0, inf, inf, ClassifyOptions{}, want{ClassULA, StatePreferred, true}},
		{"static /64", "2001:db8:5::10", 64, perm, 0, inf, inf, ClassifyOptions{}, want{ClassStatic, StatePreferred, true}},
		{"static /128 without lifetimes", "2001:db8:5::10", 128, perm, 0, inf, inf, ClassifyOptions{}, want{ClassStatic, StatePreferred, true}},
		{"infinite lifetimes without PERMANENT", "2001:db8:5::11", 128, 0, 0, inf, inf, ClassifyOptions{}, want{ClassStatic, StatePreferred, true}},
		{"user space /64 finite", "2001:db8:5::12", 64, 0, 0, h, 2 * h, ClassifyOptions{}, want{ClassGlobal, StatePreferred, true}},
		{"DHCPv6 /128", "2001:db8:6::20", 128, 0, 0, h, 2 * h, ClassifyOptions{}, want{ClassDHCPv6, StatePreferred, false}},
		{"DHCPv6 /128 deprecated", "2001:db8:6::20", 128, depr, 0, 0, h, ClassifyOptions{}, want{ClassDHCPv6, StateDeprecated, false}},
		{"DHCPv6 ULA /128", "fd00::20", 128, 0, 0, h, 2 * h, ClassifyOptions{}, want{ClassDHCPv6, StatePreferred, false}},
		{"kernel /128 is not DHCPv6", "2001:db8:6::21", 128, 0, ProtoKernelRA, h, 2 * h, ClassifyOptions{}, want{ClassGlobal, StatePreferred, true}},
		{"included /128", "2001:db8:10::20", 128, 0, 0, h, 2 * h, incl, want{ClassGlobal, StatePreferred, true}},
		{"excluded inside included (longer wins)", "2001:db8:10:1::20", 128, 0, 0, h, 2 * h, incl, want{ClassDHCPv6, StatePreferred, false}},
		{"excluded SLAAC", "2001:db8:20::1", 64, mgmt, ProtoKernelRA, h, 2 * h, incl, want{ClassGlobal, StatePreferred, false}},
		{"exclude wins a tie", "2001:db8:30::1", 64, perm, 0, inf, inf, incl, want{ClassStatic, StatePreferred, false}},
		{"include cannot make tentative registrable", "2001:db8:10::21", 128, tent, 0, h, 2 * h, incl, want{ClassGlobal, StateTentative, false}},
		{"include cannot make link-local registrable", "fe80::1", 64, perm, ProtoKernelLL, inf, inf, ClassifyOptions{Include: []netip.Prefix{netip.MustParsePrefix("::/0")}}, want{ClassLinkLocal, StatePreferred, false}},
		{"tentative", "2001:db8::1", 64, tent, ProtoKernelRA, h, 2 * h, ClassifyOptions{}, want{ClassGlobal, StateTentative, false}},
		{"optimistic", "2001:db8::1", 64, tent | opt, ProtoKernelRA, h, 2 * h, ClassifyOptions{}, want{ClassGlobal, StateOptimistic, false}},
		{"DAD failed", "2001:db8:9::1", 64, perm | tent | dadf, 0, inf, inf, ClassifyOptions{}, want{ClassStatic, StateDADFailed, false}},
		{"link-local", "fe80::5c60:95ff:fe2f:b2bb", 64, perm, ProtoKernelLL, inf, inf, ClassifyOptions{}, want{ClassLinkLocal, StatePreferred, false}},
		{"link-local added by hand", "fe80::1", 64, perm, 0, inf, inf, ClassifyOptions{}, want{ClassLinkLocal, StatePreferred, false}},
		{"loopback", "::1", 128, perm, ProtoKernelLo, inf, inf, ClassifyOptions{}, want{ClassLoopback, StatePreferred, false}},
		{"multicast", "ff02::1", 128, 0, 0, inf, inf, ClassifyOptions{}, want{ClassMulticast, StatePreferred, false}},
		{"site-local", "fec0::1", 64, perm, 0, inf, inf, ClassifyOptions{}, want{ClassOther, StatePreferred, false}},
		{"v4-mapped", "::ffff:192.0.2.1", 128, perm, 0, inf, inf, ClassifyOptions{}, want{ClassOther, StatePreferred, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s, r := Classify(RawAddr{IP: netip.MustParseAddr(tc.ip), PrefixLen: tc.plen, Flags: tc.flags, Proto: tc.proto, Preferred: tc.pref, Valid: tc.valid}, tc.o)
			if diff := cmp.Diff(tc.want, want{c, s, r}); diff != "" {
				t.Errorf("Classify (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for c := ClassUnknown; c <= ClassOther+1; c++ {
		if c.String() == "" {
			t.Errorf("class %d has no name", c)
		}
	}
	if ClassDHCPv6.String() != "dhcpv6" || StateDADFailed.String() != "dad-failed" || LinkChanged.String() != "link-changed" || Class(99).String() != "class(99)" {
		t.Error("names")
	}
}
