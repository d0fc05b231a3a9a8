#!/usr/bin/env bash
# The lab's test entry for CI: every server x client x mode x family through
# the kernel gateway, from nothing to nothing. Prints one line per case and,
# last, exactly "N passed, N failed"; exits non-zero when a case failed.
# Run as root. FGLAB_SERVERS / FGLAB_CLIENTS narrow the matrix.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/lab.sh" test
