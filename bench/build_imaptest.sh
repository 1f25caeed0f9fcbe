#!/bin/sh
# Build Dovecot's imaptest against Debian's dovecot-dev (Dovecot 2.3).
#
# Usage: bench/build_imaptest.sh SRC_DIR [BUILD_DIR]
#
# imaptest is not packaged by Debian and none of its code enters this
# repository. SRC_DIR is a checkout of https://github.com/dovecot/imaptest at
# commit 924f619 (the last one that builds against Dovecot 2.3), e.g.
#   git clone https://github.com/dovecot/imaptest && git -C imaptest checkout 924f619
# Debian's security update of Dovecot 2.3 added a fourth argument to
# imap_parser_create(); passing NULL keeps the old behaviour, so the calls are
# patched in the build copy. Prints the path of the built binary; point the
# IMAPTEST environment variable of bench/imaptest.py at it.
set -eu
src=$(cd "$1" && pwd)
build=${2:-${XDG_CACHE_HOME:-$HOME/.cache}/mailhost/imaptest-build}
if [ ! -f /usr/lib/dovecot/dovecot-config ] || [ ! -f /usr/lib/dovecot/libdovecot.so ]; then
	# dovecot-core carries libdovecot, which imaptest links against.
	flock /tmp/apt.lock apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
		dovecot-core dovecot-dev autoconf automake libtool pkg-config make gcc >&2
fi
rm -rf "$build"
mkdir -p "$build"
cp -R "$src"/. "$build"/
cd "$build"
sed -i 's/imap_parser_create(\([^;]*\), (size_t)-1);/imap_parser_create(\1, (size_t)-1, NULL);/' \
	src/commands.c src/imap-client.c src/test-parser.c
# An exported source tree has no .git from which to derive a version.
[ -s version ] || [ -e .git ] || echo 0.0.0-924f619 > version
./autogen.sh >&2
./configure --with-dovecot=/usr/lib/dovecot >&2
make -j2 >&2
echo "$build/src/imaptest"
