package registrar

import (
	"log/slog"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// ifaceName logs an interface index as its name, looked up only when a
// handler actually formats it, and only when the registrar's socket is in
// the process's own namespace: the lookup runs in the calling thread's
// namespace and would name another interface. Otherwise it is "#index".
type ifaceName struct {
	index  int
	name   string
	lookup bool
}

func (r *Registrar) iface(index int) ifaceName { return ifaceName{index: index, lookup: !r.foreignNS} }

// ifaceNamed is iface with the name already known (no lookup); an empty
// name logs as "#index".
func (r *Registrar) ifaceNamed(index int, name string) ifaceName {
	return ifaceName{index: index, name: name}
}

func (i ifaceName) LogValue() slog.Value { return slog.StringValue(i.String()) }

func (i ifaceName) String() string {
	if i.name != "" {
		return i.name
	}
	if i.lookup {
		if ifi, err := net.InterfaceByIndex(i.index); err == nil {
			return ifi.Name
		}
	}
	return "#" + strconv.Itoa(i.index)
}

// inForeignNS reports whether the calling thread is in another network
// namespace than the process's main thread.
func inForeignNS() bool {
	var self, thread unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &self) != nil || unix.Stat("/proc/thread-self/ns/net", &thread) != nil {
		return false
	}
	return self.Ino != thread.Ino || self.Dev != thread.Dev
}
