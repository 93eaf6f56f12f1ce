package netmon

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
	"testing"
	"time"
)

// FuzzApply feeds arbitrary datagrams to the parser and the state: nothing
// may panic, and the queue must drain.
//
//	go test -run '^$' -fuzz FuzzApply -fuzztime 30s ./netmon
func FuzzApply(f *testing.F) {
	for _, m := range []message{
		newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0),
		newLinkMsg(unix.RTM_NEWLINK, unix.AF_INET6, 2, "eth0", upFlags, ifRAManaged),
		newLinkMsg(unix.RTM_DELLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0),
		newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800, 3600),
		newAddrMsg(unix.RTM_DELADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800, 3600),
	} {
		f.Add(datagram(m))
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		msgs, _ := parseDatagram(d)
		s := newState(ClassifyOptions{}, 8, time.Second)
		s.resync(msgs, t0)
		s.applyMessages(msgs, t0)
		for range 10000 {
			if _, ok := s.next(t0); !ok {
				return
			}
		}
		t.Fatal("queue does not drain")
	})
}

func datagram(m message) []byte {
	b := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(m.Data))
	b = append(b, m.Data...)
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], m.Type)
	return b
}
