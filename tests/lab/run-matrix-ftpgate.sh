#!/usr/bin/env bash
# The live gateway's matrix for CI: every server x client x mode x family
# with `ftpgate run` as the gateway, layouts masq and published, plus the
# bounce and pinhole-stealing cases (`lab.sh test --gw ftpgate`). From
# nothing to nothing; one line per case and, last, exactly
# "N passed, N failed"; exits non-zero when a case failed.
# Run as root. FTPGATE=path picks the binary (default target/release/ftpgate,
# built if missing). Namespaces default to fgmc/fgmw/fgms so this can run
# beside the kernel matrix; FGLAB_SERVERS / FGLAB_CLIENTS narrow it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export FGLAB_NS_C=${FGLAB_NS_C:-fgmc} FGLAB_NS_G=${FGLAB_NS_G:-fgmw} FGLAB_NS_S=${FGLAB_NS_S:-fgms}
export FGLAB_STATE=${FGLAB_STATE:-/run/fglab-matrix}
export FTPGATE=${FTPGATE:-$REPO/target/release/ftpgate}
if [[ ! -x $FTPGATE ]]; then (cd "$REPO" && cargo build --release --bin ftpgate); fi
exec "$HERE/lab.sh" test --gw ftpgate
