package shield

import (
	"encoding/binary"
	"fmt"
	"path"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// offloadFeatures are turned off: VLAN offloads would move tags out of the
// frame, and receive/segmentation offloads would merge frames beyond the
// MTU. Each is an `ethtool -K` name and the pattern (path.Match) of the
// kernel's feature strings (ETH_SS_FEATURES) it stands for, as ethtool(8)
// maps them: "tso" is every tx-tcp*-segmentation the kernel has.
var offloadFeatures = []struct {
	name   string
	kernel string
}{
	{"rxvlan", "rx-vlan-hw-parse"},
	{"txvlan", "tx-vlan-hw-insert"},
	{"rx-vlan-stag-hw-parse", "rx-vlan-stag-hw-parse"},
	{"tx-vlan-stag-hw-insert", "tx-vlan-stag-hw-insert"},
	{"gro", "rx-gro"},
	{"lro", "rx-lro"},
	{"tso", "tx-tcp*-segmentation"},
	{"gso", "tx-generic-segmentation"},
}

// offloadBits returns, for each of offloadFeatures, the indexes of the
// device's feature strings it matches.
func offloadBits(names []string) [][]int {
	bits := make([][]int, len(offloadFeatures))
	for i, f := range offloadFeatures {
		for j, n := range names {
			if ok, _ := path.Match(f.kernel, n); ok {
				bits[i] = append(bits[i], j)
			}
		}
	}
	return bits
}

// disableOffloads turns off offloadFeatures on ifname with the SIOCETHTOOL
// ioctl, as `ethtool -K ifname … off` does, and logs at warning level what
// is still on afterwards (a fixed feature, a driver that refuses, no
// CAP_NET_ADMIN): frames may then be tagged or merged behind the switch's
// back. A feature the device does not have is no matter.
func (s *Switch) disableOffloads(ifname string) {
	still, err := disableOffloads(ifname)
	if err != nil {
		s.log.Warn("offloads not turned off: VLAN tags or merged frames may reach the switch unseen", "iface", ifname, "err", err)
		return
	}
	if len(still) > 0 {
		s.log.Warn("offloads still on: VLAN tags or merged frames may reach the switch unseen", "iface", ifname, "features", strings.Join(still, ","))
	}
}

// disableOffloads asks the kernel to turn offloadFeatures off on ifname and
// returns the ethtool names of those still active afterwards.
func disableOffloads(ifname string) ([]string, error) {
	// Any socket reaches the device ioctls; AF_UNIX needs no address
	// family beyond what the unit allows for --stats.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket for SIOCETHTOOL: %w", err)
	}
	defer unix.Close(fd)
	names, err := featureNames(fd, ifname)
	if err != nil {
		return nil, err
	}
	bits := offloadBits(names)
	blocks := (len(names) + 31) / 32
	// struct ethtool_sfeatures: cmd, size, then {valid, requested} per
	// block of 32 features; requested 0 turns the valid ones off.
	req := make([]byte, 8+8*blocks)
	binary.NativeEndian.PutUint32(req[0:], unix.ETHTOOL_SFEATURES)
	binary.NativeEndian.PutUint32(req[4:], uint32(blocks))
	for _, is := range bits {
		for _, i := range is {
			off := 8 + 8*(i/32)
			binary.NativeEndian.PutUint32(req[off:], binary.NativeEndian.Uint32(req[off:])|1<<(i%32))
		}
	}
	// A positive return (ETHTOOL_F_UNSUPPORTED, _WISH) says some were not
	// changed; which ones the active set read below tells.
	if err := ethtoolIoctl(fd, ifname, req); err != nil {
		return nil, fmt.Errorf("ETHTOOL_SFEATURES: %w", err)
	}
	active, err := activeFeatures(fd, ifname, blocks)
	if err != nil {
		return nil, err
	}
	var still []string
	for fi, is := range bits {
		for _, i := range is {
			if active(i) {
				still = append(still, offloadFeatures[fi].name)
				break
			}
		}
	}
	return still, nil
}

// featureNames returns the device's feature strings (ETH_SS_FEATURES), in
// bit order.
func featureNames(fd int, ifname string) ([]string, error) {
	// struct ethtool_sset_info: cmd, reserved, sset_mask (u64), data[1].
	info := make([]byte, 24)
	binary.NativeEndian.PutUint32(info[0:], unix.ETHTOOL_GSSET_INFO)
	binary.NativeEndian.PutUint64(info[8:], 1<<ethSSFeatures)
	if err := ethtoolIoctl(fd, ifname, info); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %w", err)
	}
	if binary.NativeEndian.Uint64(info[8:])&(1<<ethSSFeatures) == 0 {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: no feature strings")
	}
	n := int(binary.NativeEndian.Uint32(info[16:]))
	if n <= 0 || n > 4096 {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %d feature strings", n)
	}
	// struct ethtool_gstrings: cmd, string_set, len, then len strings of
	// ETH_GSTRING_LEN (32) octets.
	const strLen = 32
	gs := make([]byte, 12+n*strLen)
	binary.NativeEndian.PutUint32(gs[0:], unix.ETHTOOL_GSTRINGS)
	binary.NativeEndian.PutUint32(gs[4:], ethSSFeatures)
	binary.NativeEndian.PutUint32(gs[8:], uint32(n))
	if err := ethtoolIoctl(fd, ifname, gs); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSTRINGS: %w", err)
	}
	names := make([]string, n)
	for i := range names {
		s := gs[12+i*strLen : 12+(i+1)*strLen]
		if j := strings.IndexByte(string(s), 0); j >= 0 {
			s = s[:j]
		}
		names[i] = string(s)
	}
	return names, nil
}

// activeFeatures reads the device's active features (ETHTOOL_GFEATURES).
func activeFeatures(fd int, ifname string, blocks int) (func(int) bool, error) {
	// struct ethtool_gfeatures: cmd, size, then {available, requested,
	// active, never_changed} per block.
	gf := make([]byte, 8+16*blocks)
	binary.NativeEndian.PutUint32(gf[0:], unix.ETHTOOL_GFEATURES)
	binary.NativeEndian.PutUint32(gf[4:], uint32(blocks))
	if err := ethtoolIoctl(fd, ifname, gf); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GFEATURES: %w", err)
	}
	return func(i int) bool {
		return binary.NativeEndian.Uint32(gf[8+16*(i/32)+8:])&(1<<(i%32)) != 0
	}, nil
}

// ethSSFeatures is ETH_SS_FEATURES of linux/ethtool.h (not in x/sys/unix).
const ethSSFeatures = 4

// ifreqData is struct ifreq with ifr_data, the pointer SIOCETHTOOL takes;
// the kernel reads sizeof(struct ifreq) of it (40 octets on 64-bit).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtoolIoctl runs SIOCETHTOOL on ifname with buf, whose first word is the
// ETHTOOL_ command; buf is filled in by the kernel.
func ethtoolIoctl(fd int, ifname string, buf []byte) error {
	if len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", ifname)
	}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&buf[0])
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if errno != 0 {
		return errno
	}
	return nil
}
