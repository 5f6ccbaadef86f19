#!/usr/bin/env bash
# Install PostgreSQL 15 (Debian) and the pgvector extension for it, for the pgvector store tests and
# benchmarks. Idempotent and fast when everything is there already (it checks, then exits).
#
# pgvector is not packaged for Debian 12 (bookworm), so it is built from Debian's own source package
# of the next release (trixie), fetched through a deb-src-only entry (no trixie binaries are
# installed), against bookworm's PostgreSQL 15 (~15 s). Elsewhere (other distributions, other
# PostgreSQL versions) install pgvector your usual way: https://github.com/pgvector/pgvector#installation
#
#   sudo .ci/install-pgvector.sh          # or as root; PG_MAJOR=15 by default
set -euo pipefail
PG_MAJOR="${PG_MAJOR:-15}"
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
EXT_DIR="/usr/share/postgresql/$PG_MAJOR/extension"

have_pgvector() { [ -x "$PG_BIN/initdb" ] && [ -f "$EXT_DIR/vector.control" ] && [ -f "/usr/lib/postgresql/$PG_MAJOR/lib/vector.so" ]; }

if have_pgvector; then
    echo "pgvector: already installed for PostgreSQL $PG_MAJOR ($(sed -n "s/^default_version = '\(.*\)'/\1/p" "$EXT_DIR/vector.control"))"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "pgvector: no apt-get here; install PostgreSQL $PG_MAJOR and pgvector yourself (the pgvector tests are skipped without them)" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "pgvector: run as root (apt-get and make install need it): sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" build-essential dpkg-dev >/dev/null

# Debian's pgvector source package from trixie, through a deb-src-only entry that is removed again
# afterwards (nothing from trixie is installed; the system's apt sources are left as they were).
SRC_LIST=/etc/apt/sources.list.d/ragtune-trixie-src.sources
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD" "$SRC_LIST"' EXIT
cat > "$SRC_LIST" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt-get update -qq >/dev/null
(cd "$BUILD" && apt-get source -qq pgvector >/dev/null 2>&1)
SRC="$(find "$BUILD" -maxdepth 1 -type d -name 'pgvector-*' | head -1)"
[ -n "$SRC" ] || { echo "pgvector: apt-get source pgvector found nothing" >&2; exit 1; }
make -s -C "$SRC" PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS="" -j"$(nproc)" >/dev/null
make -s -C "$SRC" PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
have_pgvector || { echo "pgvector: build finished but vector.control/vector.so are missing" >&2; exit 1; }
echo "pgvector: built $(basename "$SRC") from Debian trixie's source package and installed for PostgreSQL $PG_MAJOR"
