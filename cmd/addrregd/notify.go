package main

import (
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/addrreg/addrreg/agent"
)

// notifier speaks systemd's notify protocol (sd_notify(3)) through
// go-systemd's daemon package, for Type=notify and WatchdogSec= in
// addrregd.service. Without NOTIFY_SOCKET (not started by systemd, or not
// as Type=notify) it is off and the agent gets no heartbeat callback.
type notifier struct {
	log      *slog.Logger
	on       bool
	watchdog time.Duration // WatchdogSec, from WATCHDOG_USEC; 0: none
	warned   atomic.Bool
}

func newNotifier(log *slog.Logger) *notifier {
	n := &notifier{log: log, on: os.Getenv("NOTIFY_SOCKET") != ""}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog ignored", "reason", err.Error())
	}
	n.watchdog = wd
	return n
}

// interval is how often the agent's owner loop should beat: a third of the
// watchdog period (sd_watchdog_enabled(3) asks for half; a third leaves
// room on a loaded machine), else 10 s for STATUS= alone.
func (n *notifier) interval() time.Duration {
	if n.watchdog > 0 {
		return n.watchdog / 3
	}
	return 10 * time.Second
}

// heartbeat is agent.Config.Heartbeat: called from the agent's owner loop,
// so a wedged loop stops pinging and systemd restarts the daemon.
func (n *notifier) heartbeat(s agent.Summary) {
	state := "STATUS=" + s.String()
	if n.watchdog > 0 {
		state = "WATCHDOG=1\n" + state
	}
	n.send(state)
}

// ready: the netlink subscription and the raw socket are open.
func (n *notifier) ready() { n.send("READY=1\nSTATUS=watching interfaces, discovering servers") }

func (n *notifier) stopping() { n.send("STOPPING=1\nSTATUS=stopping") }

func (n *notifier) send(state string) {
	if !n.on {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil && !n.warned.Swap(true) {
		n.log.Warn("systemd notify failed", "socket", os.Getenv("NOTIFY_SOCKET"), "err", err)
	}
}
