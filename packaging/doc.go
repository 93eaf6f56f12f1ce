// Package packaging holds the checks of what `make dist` ships: the Debian
// packages built with debhelper from debian/ (lintian, contents, ELF
// architecture, static linking, reproducibility, maintainer scripts in a
// chroot, unit verification and security scores), the version scheme of
// version.sh, and the man pages' coverage of every flag. It has no code of
// its own; build-deb.sh and version.sh are the tools it tests.
package packaging
