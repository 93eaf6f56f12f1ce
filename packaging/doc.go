// Package packaging holds the checks of what `make dist` ships: the Debian
// packages built with debhelper from debian/ (lintian, contents, ELF
// architecture, static linking, reproducibility, maintainer scripts in a
// chroot, unit verification and security scores, the documentation
// shipped), the version scheme of version.sh, the man pages' coverage of
// every flag of every command and subcommand, and debian/copyright against
// the modules linked in. It has no code of its own; build-deb.sh,
// version.sh and copyright (the generator of debian/copyright) are the
// tools it tests.
package packaging
