package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/addrreg/addrreg/agent"
)

// Exit statuses of `addrregd status`, as systemctl status uses them.
const (
	exitNotRunning = 3 // no daemon answers on the control socket
	exitUnknown    = 4 // the socket exists but could not be read (permission)
)

// runStatus is `addrregd status [--json] [-i IFACE] [--control-socket PATH]`.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("addrregd status", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "print the status document as JSON (schema: /usr/share/doc/addrregd/status.md)")
	ifaces := fs.StringSliceP("interface", "i", nil, "show only this interface (repeatable)")
	path := fs.String("control-socket", defaultControlSocket, "the daemon's control socket")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: addrregd status [flags]\n\nShows what the running addrregd knows: per interface the discovery state and the\nserver that answered, per address its kind, phase, last registration and next refresh.\nExit status: 0, 3 when no daemon is running, 4 when its socket cannot be read.\n\nFlags:\n%s", fs.FlagUsages())
			return 0
		}
		fmt.Fprintf(stderr, "addrregd status: %v\n", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "addrregd status: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	raw, err := fetchStatus(*path)
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		fmt.Fprintf(stderr, "addrregd is not running (nothing answers on %s)\n", *path)
		return exitNotRunning
	case errors.Is(err, syscall.EACCES):
		fmt.Fprintf(stderr, "addrregd status: %v: run as root or as a member of the daemon's --control-group\n", err)
		return exitUnknown
	case err != nil:
		fmt.Fprintf(stderr, "addrregd status: %v\n", err)
		return exitUnknown
	}
	var doc statusDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		fmt.Fprintf(stderr, "addrregd status: the daemon's answer is not a status document: %v\n", err)
		return 1
	}
	if len(*ifaces) > 0 {
		var keep []agent.IfaceStatus
		for _, name := range *ifaces {
			found := false
			for _, ifc := range doc.Interfaces {
				if ifc.Name == name {
					keep, found = append(keep, ifc), true
				}
			}
			if !found {
				fmt.Fprintf(stderr, "addrregd status: addrregd does not watch interface %q\n", name)
				return 1
			}
		}
		doc.Interfaces = keep
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			fmt.Fprintf(stderr, "addrregd status: %v\n", err)
			return 1
		}
		return 0
	}
	printStatus(stdout, doc)
	return 0
}

// fetchStatus reads the status document from the control socket.
func fetchStatus(path string) ([]byte, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(io.LimitReader(c, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s: the daemon closed the connection without an answer (is it stopping?)", path)
	}
	return b, nil
}

// printStatus writes the document for people, in the manner of
// `networkctl status`.
func printStatus(w io.Writer, doc statusDoc) {
	now := doc.Daemon.Now
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		d := t.Sub(now).Round(time.Second)
		rel := fmt.Sprintf("in %v", d)
		if d <= 0 {
			rel = fmt.Sprintf("%v ago", -d)
		}
		return t.Local().Format("15:04:05") + " (" + rel + ")"
	}
	fmt.Fprintf(w, "addrregd %s (pid %d), DUID %s, up since %s\n", doc.Daemon.Version, doc.Daemon.PID, doc.Daemon.DUID,
		doc.Daemon.Started.Local().Format(time.DateTime))
	if !doc.Daemon.Enable {
		fmt.Fprintln(w, "  sending disabled (--enable=false)")
	}
	if !doc.Daemon.RegisterTemporary {
		fmt.Fprintln(w, "  temporary addresses are not registered (--register-temporary=false)")
	}
	if doc.FQDN != "" {
		fmt.Fprintf(w, "  registering with the name %s (Client FQDN)\n", doc.FQDN)
	} else {
		fmt.Fprintln(w, "  registering with no name")
	}
	fmt.Fprintf(w, "  queued %d, in flight %d\n", doc.Queued, doc.InFlight)
	if len(doc.Interfaces) == 0 {
		fmt.Fprintln(w, "\nno interfaces")
	}
	for _, ifc := range doc.Interfaces {
		fmt.Fprintf(w, "\n● %d: %s\n", ifc.Index, ifc.Name)
		fmt.Fprintf(w, "        State: %s\n", ifc.State)
		mo := "no"
		if ifc.SeenMO {
			mo = "yes"
		}
		fmt.Fprintf(w, "  RA M/O flag: %s\n", mo)
		if s := ifc.Server; s != nil {
			fmt.Fprintf(w, "       Server: %s (DUID %x), answered %s\n", s.Address, []byte(s.DUID), when(s.Answered))
		}
		if !ifc.NextProbe.IsZero() {
			fmt.Fprintf(w, "   Next probe: %s\n", when(ifc.NextProbe))
		}
		if len(ifc.Addresses) == 0 {
			fmt.Fprintln(w, "    Addresses: none")
			continue
		}
		fmt.Fprintln(w, "    Addresses:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "      ADDRESS\tKIND\tPHASE\tREGISTERED\tTOLD (PREF/VALID)\tNEXT REFRESH\tWHY\tLAST ERROR")
		for _, a := range ifc.Addresses {
			told := "-"
			if a.Told != nil {
				told = lifetimeText(a.Told.Preferred) + "/" + lifetimeText(a.Told.Valid)
			}
			why := string(a.RefreshReason)
			if why == "" {
				why = "-"
			}
			lastErr := a.LastError
			if lastErr == "" {
				lastErr = "-"
			}
			fmt.Fprintf(tw, "      %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Addr, orDash(string(a.Kind)), a.Phase,
				when(a.LastRegistered), told, when(a.NextRefresh), why, strings.ReplaceAll(lastErr, "\n", " "))
		}
		tw.Flush()
	}
}

func lifetimeText(s uint32) string {
	if s == 0xffffffff {
		return "infinite"
	}
	return (time.Duration(s) * time.Second).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// isStatusCommand reports whether args ask for `addrregd status`.
func isStatusCommand(args []string) bool { return len(args) > 0 && args[0] == "status" }
