// Command copyright writes debian/copyright from the Go modules linked into
// the shipped binaries, with each module's licence text, copyright lines
// and NOTICE file (Apache-2.0 section 4(d)) read from the module cache.
//
//	go run ./packaging/copyright [-o FILE] BINARY...         (make copyright)
//	go run ./packaging/copyright -list [-cmds C,..] [-arches A,..] [-o FILE]
//
// With binaries it reads their build information, as `go version -m` prints
// it: the modules actually linked. With -list it asks `go list -deps` which
// modules the commands' static builds (CGO_ENABLED=0 GOOS=linux) for each
// architecture compile in, which is the same set without building; the
// packaging tests use it to check that debian/copyright is up to date.
package main

import (
	"bytes"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// module is one linked module and the binaries that link it.
type module struct {
	path, version string
	dir           string   // in the module cache
	bins          []string // command names
}

func main() {
	out := flag.String("o", "debian/copyright", "write here (-: standard output)")
	list := flag.Bool("list", false, "take the modules from go list -deps instead of binaries")
	cmds := flag.String("cmds", "addrregd,addrreg-refserver,dhcp6-shield", "with -list: the commands (./cmd/NAME)")
	arches := flag.String("arches", "amd64,arm64", "with -list: the architectures")
	flag.Parse()
	var mods map[string]*module
	var err error
	if *list {
		mods, err = fromList(strings.Split(*cmds, ","), strings.Split(*arches, ","))
	} else {
		if flag.NArg() == 0 {
			fmt.Fprintln(os.Stderr, "usage: copyright [-o FILE] BINARY... | copyright -list")
			os.Exit(2)
		}
		mods, err = fromBinaries(flag.Args())
	}
	if err == nil {
		var b []byte
		if b, err = render(mods); err == nil {
			if *out == "-" {
				_, err = os.Stdout.Write(b)
			} else {
				err = os.WriteFile(*out, b, 0o644)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "copyright: %v\n", err)
		os.Exit(1)
	}
}

func add(mods map[string]*module, path, version, bin string) error {
	m := mods[path]
	if m == nil {
		m = &module{path: path, version: version}
		mods[path] = m
	}
	if m.version != version {
		// Every binary comes from one go.mod: one version per module.
		return fmt.Errorf("%s: versions %s and %s linked (binaries from different commits?)", path, m.version, version)
	}
	if !slices.Contains(m.bins, bin) {
		m.bins = append(m.bins, bin)
	}
	return nil
}

// fromBinaries reads the build information of each binary (go version -m).
func fromBinaries(bins []string) (map[string]*module, error) {
	mods := map[string]*module{}
	for _, b := range bins {
		bi, err := buildinfo.ReadFile(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b, err)
		}
		for _, d := range bi.Deps {
			if d.Replace != nil {
				d = d.Replace
			}
			if err := add(mods, d.Path, d.Version, filepath.Base(b)); err != nil {
				return nil, err
			}
		}
	}
	return mods, locate(mods)
}

// fromList asks go list which modules provide the packages each command's
// static build compiles.
func fromList(cmds, arches []string) (map[string]*module, error) {
	mods := map[string]*module{}
	for _, arch := range arches {
		for _, c := range cmds {
			cmd := exec.Command("go", "list", "-deps", "-f",
				`{{with .Module}}{{if not .Main}}{{with .Replace}}{{.Path}} {{.Version}}{{else}}{{.Path}} {{.Version}}{{end}}{{end}}{{end}}`,
				"./cmd/"+c)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
			cmd.Stderr = os.Stderr
			b, err := cmd.Output()
			if err != nil {
				return nil, fmt.Errorf("go list ./cmd/%s (%s): %w", c, arch, err)
			}
			for line := range strings.Lines(string(b)) {
				if f := strings.Fields(line); len(f) == 2 {
					if err := add(mods, f[0], f[1], c); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return mods, locate(mods)
}

// locate finds each module's directory in the module cache.
func locate(mods map[string]*module) error {
	cache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	for _, m := range mods {
		m.dir = filepath.Join(strings.TrimSpace(string(cache)), escape(m.path)+"@"+escape(m.version))
		if _, err := os.Stat(m.dir); err != nil {
			return fmt.Errorf("%s %s is not in the module cache (go mod download): %w", m.path, m.version, err)
		}
	}
	return nil
}

// escape is the module cache's case encoding: an upper-case letter becomes
// '!' and the letter in lower case.
func escape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// noticeFiles are a module's licence and notice files, by kind.
func noticeFiles(dir string) (licence, notice string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", "", err
	}
	for _, e := range ents {
		name := strings.ToUpper(e.Name())
		switch {
		case e.IsDir():
		case strings.HasPrefix(name, "LICENSE"), strings.HasPrefix(name, "LICENCE"), strings.HasPrefix(name, "COPYING"):
			if licence != "" {
				return "", "", fmt.Errorf("%s: two licence files (%s, %s)", dir, filepath.Base(licence), e.Name())
			}
			licence = filepath.Join(dir, e.Name())
		case strings.HasPrefix(name, "NOTICE"):
			notice = filepath.Join(dir, e.Name())
		}
	}
	if licence == "" {
		return "", "", fmt.Errorf("%s: no licence file", dir)
	}
	return licence, notice, nil
}

// classify names a licence text by its SPDX identifier (Expat for MIT, as
// Debian calls it).
func classify(text string) (string, error) {
	flat := strings.Join(strings.Fields(text), " ")
	switch {
	case strings.Contains(flat, "Apache License Version 2.0"):
		return "Apache-2.0", nil
	case strings.Contains(flat, "MIT No Attribution"):
		return "MIT-0", nil
	case strings.Contains(flat, "Permission is hereby granted, free of charge") &&
		strings.Contains(flat, "The above copyright notice and this permission notice shall be included"):
		return "Expat", nil
	case strings.Contains(flat, "Redistribution and use in source and binary forms"):
		if strings.Contains(flat, "Neither the name") || strings.Contains(flat, "The names of its contributors may not") {
			return "BSD-3-Clause", nil
		}
		return "BSD-2-Clause", nil
	}
	return "", errors.New("unknown licence")
}

// holders are the copyright lines of a licence (for Apache-2.0 only those
// after the terms: the appendix's own, not its template) and of a NOTICE.
func holders(licence, notice, id string) []string {
	var out []string
	scan := func(text string) {
		for line := range strings.Lines(text) {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "Copyright ") || strings.Contains(line, "[yyyy]") {
				continue
			}
			line = strings.TrimPrefix(line, "Copyright ")
			for _, p := range []string{"(c) ", "(C) ", "© "} {
				line = strings.TrimPrefix(line, p)
			}
			line = strings.TrimSuffix(strings.TrimSpace(strings.TrimSuffix(line, "All rights reserved.")), ".")
			if !slices.Contains(out, line) {
				out = append(out, line)
			}
		}
	}
	if id == "Apache-2.0" {
		if _, after, ok := strings.Cut(licence, "END OF TERMS AND CONDITIONS"); ok {
			licence = after
		}
	}
	scan(licence)
	scan(notice)
	return out
}

// field formats a multi-line field value: continuation lines indented by
// one space, empty lines as " .".
func field(w *bytes.Buffer, name, first, text string) {
	fmt.Fprintf(w, "%s: %s\n", name, first)
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(text, "\r", ""), "\n \t"), "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	for _, l := range lines {
		l = strings.TrimRight(strings.ReplaceAll(l, "\t", "    "), " ")
		if l == "" {
			w.WriteString(" .\n")
		} else {
			w.WriteString(" " + l + "\n")
		}
	}
}

const header = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: addrreg
Upstream-Contact: addrreg developers <dev@addrreg.invalid>
Source: https://github.com/addrreg/addrreg
Comment: Generated by packaging/copyright (make copyright) from the build
 information of the shipped binaries (go version -m): do not edit by hand.
 .
 The binaries are statically linked Go programs. Besides this source they
 contain the Go standard library and the Go modules listed below, which the
 build fetches from the Go module proxy at the versions go.mod and go.sum
 name. A Files paragraph for a module names its files by module path (as
 go mod vendor lays them out); its Comment says which version is linked
 into which binary and carries the module's NOTICE file, if it has one
 (Apache-2.0 section 4(d)).

Files: *
Copyright: 2026 the addrreg authors
License: BSD-3-Clause
`

func render(mods map[string]*module) ([]byte, error) {
	var w bytes.Buffer
	w.WriteString(header)

	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	stdlib, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "LICENSE"))
	if err != nil {
		return nil, err
	}
	w.WriteString("\nFiles: GOROOT/src/*\n")
	fmt.Fprintf(&w, "Copyright: %s\n", strings.Join(holders(string(stdlib), "", ""), "\n "))
	field(&w, "License", "BSD-3-Clause", string(stdlib))
	w.WriteString("Comment: The Go standard library and runtime, linked into every binary.\n")

	paths := make([]string, 0, len(mods))
	for p := range mods {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	apache := false
	for _, p := range paths {
		m := mods[p]
		licFile, noticeFile, err := noticeFiles(m.dir)
		if err != nil {
			return nil, err
		}
		lic, err := os.ReadFile(licFile)
		if err != nil {
			return nil, err
		}
		var notice []byte
		if noticeFile != "" {
			if notice, err = os.ReadFile(noticeFile); err != nil {
				return nil, err
			}
		}
		id, err := classify(string(lic))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", licFile, err)
		}
		who := holders(string(lic), string(notice), id)
		if len(who) == 0 {
			return nil, fmt.Errorf("%s %s: no copyright line in %s or a NOTICE", m.path, m.version, filepath.Base(licFile))
		}
		fmt.Fprintf(&w, "\nFiles: %s/*\n", m.path)
		fmt.Fprintf(&w, "Copyright: %s\n", strings.Join(who, "\n "))
		if id == "Apache-2.0" {
			apache = true
			fmt.Fprintf(&w, "License: %s\n", id)
		} else {
			field(&w, "License", id, string(lic))
		}
		slices.Sort(m.bins)
		comment := ""
		if len(notice) > 0 {
			comment = "Its NOTICE file:\n\n" + string(notice)
		}
		field(&w, "Comment", fmt.Sprintf("Module %s %s, linked into %s.", m.path, m.version, strings.Join(m.bins, ", ")), comment)
	}

	own, err := os.ReadFile("LICENSE") // run from the top, as ./cmd/NAME needs
	if err != nil {
		return nil, err
	}
	w.WriteString("\n")
	field(&w, "License", "BSD-3-Clause", string(own))
	if apache {
		w.WriteString("\nLicense: Apache-2.0\n On Debian systems, the full text of the Apache License, Version 2.0 can be\n found in /usr/share/common-licenses/Apache-2.0.\n")
	}
	return w.Bytes(), nil
}
