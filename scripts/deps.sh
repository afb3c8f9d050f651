#!/usr/bin/env bash
# Installs what building and testing Halyard needs on a fresh Debian machine. Idempotent:
# packages already present are not touched, and apt is only updated when something is missing.
set -euo pipefail

# Build: bindgen (librocksdb-sys) needs libclang; the C++ toolchain builds RocksDB.
BUILD_PKGS=(libclang-dev clang g++ make pkg-config)
# Tests: real peers (OpenLDAP slapd; Python imaplib/poplib, mbsync and fetchmail as mail clients;
# swaks as an SMTP client).
# Postfix provides smtp-sink (a relay target) and smtp-source (the benchmark client); its own
# daemon is left unconfigured and stopped. dnsmasq serves MX records on loopback.
# Chaos: iptables (NFQUEUE rules of the delay nemesis), faketime/libfaketime (clock nemeses).
# tcpdump captures the testbed's cluster bridge (no secret may cross it in clear).
TEST_PKGS=(iproute2 procps slapd ldap-utils python3 isync fetchmail swaks libnet-ssleay-perl
  libio-socket-ssl-perl postfix dnsmasq-base nftables iptables faketime libfaketime tcpdump openssl)

want=("${BUILD_PKGS[@]}")
if [ "${1:-}" = "--test" ]; then
  want+=("${TEST_PKGS[@]}")
  # Node.js and npm run ImapFlow (npm `imapflow`, MIT), the IMAP library of many mail apps.
  # Machines of this kind ship Node.js 20 with npm; Debian's are the fallback.
  command -v npm >/dev/null 2>&1 || want+=(nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  # Postfix asks how to configure itself: not at all (we only use its test tools).
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm client libraries of the tests, pinned, in a cache outside the clone (node/tests/support
# finds them there; HALYARD_NPM_DIR overrides).
NPM_DIR="${HALYARD_NPM_DIR:-$HOME/.cache/halyard-npm}"
IMAPFLOW_VERSION=2.10.2
if [ "${1:-}" = "--test" ] && ! grep -qs "\"version\": \"$IMAPFLOW_VERSION\"" "$NPM_DIR/node_modules/imapflow/package.json"; then
  echo "installing: imapflow@$IMAPFLOW_VERSION (npm) in $NPM_DIR" >&2
  mkdir -p "$NPM_DIR"
  npm install --silent --no-audit --no-fund --prefix "$NPM_DIR" "imapflow@$IMAPFLOW_VERSION" >/dev/null
fi

# PyPI client libraries of the tests, pinned, outside the clone (node/tests/support puts them on
# PYTHONPATH; HALYARD_PY_DIR overrides): scramp (SCRAM-SHA-256 client, MIT-0).
PY_DIR="${HALYARD_PY_DIR:-$HOME/.cache/halyard-py}"
SCRAMP_VERSION=1.5.0
if [ "${1:-}" = "--test" ] && [ ! -d "$PY_DIR/scramp-$SCRAMP_VERSION.dist-info" ]; then
  echo "installing: scramp==$SCRAMP_VERSION (PyPI) in $PY_DIR" >&2
  python3 -m pip --version >/dev/null 2>&1 || {
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  }
  mkdir -p "$PY_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore --target "$PY_DIR" "scramp==$SCRAMP_VERSION" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
