package registrar

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/test/topo"
)

// BenchmarkReplyBurstReceiveBuffer measures how many of a burst of 2,000
// ADDR-REG-REPLY-sized datagrams (90 bytes, UDP 547 → 546) the raw socket
// queues before anything reads it: with the receive buffer an unprivileged
// process gets at Debian's default net.core.rmem_max (212992, doubled by
// the kernel), and with the 4 MiB SO_RCVBUFFORCE sets, which needs
// CAP_NET_ADMIN. It decides whether addrregd.service can drop CAP_NET_ADMIN
// (it cannot: 512 of 2,000 at the default).
func BenchmarkReplyBurstReceiveBuffer(b *testing.B) {
	topo.RequireRoot(b)
	const burst = 2000
	for _, bc := range []struct {
		name   string
		rcvbuf int // 0: what listenRaw sets (SO_RCVBUFFORCE as root)
	}{{"rmem_max_default", 212992}, {"forced_4MiB", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			host := topo.New(b).Node("host")
			host.MustExec(b, "ip", "link", "set", "lo", "up")
			var queued, effective int
			for b.Loop() {
				err := host.Do(func() error {
					c, err := listenRaw()
					if err != nil {
						return err
					}
					defer c.close()
					if bc.rcvbuf > 0 {
						if err := control(c.c, func(fd int) error {
							return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bc.rcvbuf)
						}); err != nil {
							return err
						}
					}
					_ = control(c.c, func(fd int) error {
						effective, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
						return err
					})
					// A DHCPv6 client on 546, as on a real host: no ICMP
					// errors, and the raw socket still gets its copy.
					sink, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: 546})
					if err != nil {
						return err
					}
					defer sink.Close()
					src, err := net.DialUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: 547}, &net.UDPAddr{IP: net.IPv6loopback, Port: 546})
					if err != nil {
						return err
					}
					defer src.Close()
					payload := make([]byte, 90)
					for range burst {
						if _, err := src.Write(payload); err != nil {
							return err
						}
					}
					queued = 0
					buf := make([]byte, 2048)
					for {
						_ = c.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
						if _, _, _, _, err := c.recv(buf); err != nil {
							break
						}
						queued++
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(queued), "queued/2000")
			b.ReportMetric(float64(effective), "rcvbuf_bytes")
		})
	}
}
