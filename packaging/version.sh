#!/usr/bin/env bash
# Prints the Debian version of a commit (default HEAD):
#
#   <VERSION>+git<commits>.<date>.<hash>     e.g. 0.1.0+git245.20261201.85939ad
#
# <commits> is the number of commits reachable from it: every later commit
# on main reaches all the earlier ones and itself, so the count, and with it
# the version, grows (dpkg compares "git245" < "git246" numerically). The
# date (committer, UTC) and hash are for humans. VERSION is read from the
# commit itself (0.0.0 before it existed); bump it only upwards.
#
# A shallow clone cannot count its history: the version then ends in
# "~shallow" with the count it can see, sorts below the real one, and a
# warning says so. Outside git (a source tarball) the version comes from the
# VERSION file alone plus "+nogit".
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD}
if ! git rev-parse --verify -q "$rev^{commit}" >/dev/null 2>&1; then
	echo "$(tr -d ' \n' < VERSION 2>/dev/null || echo 0.0.0)+nogit"
	exit 0
fi
base=$(git show "$rev:VERSION" 2>/dev/null | tr -d ' \n' || true)
base=${base:-0.0.0}
count=$(git rev-list --count "$rev")
date=$(TZ=UTC0 git show -s --date=format-local:%Y%m%d --format=%cd "$rev")
hash=$(git rev-parse --short=7 "$rev")
v="$base+git$count.$date.$hash"
if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
	echo "version.sh: shallow clone, the commit count ($count) is too low: $v~shallow sorts below the real version" >&2
	v="$v~shallow"
fi
# Uncommitted changes in the work tree (HEAD only) mark the build.
if [ "$rev" = HEAD ] && ! git diff --quiet HEAD -- 2>/dev/null; then
	v="$v.dirty"
fi
echo "$v"
