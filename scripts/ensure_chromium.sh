#!/usr/bin/env bash
# Make Debian's `chromium` available for the HTML-report test (tests/benchmark/test_bench_runs.py renders the
# report in headless Chromium).  Installs it with apt-get when it is missing and we are root or have
# password-less sudo; otherwise says how to install it and exits 0 (the test is then skipped, with
# that reason, rather than failing).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no chromium and no apt-get; install Chromium to run the HTML report test" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure_chromium: chromium is missing; run 'sudo apt-get install chromium' to enable the HTML report test" >&2
        exit 0
    fi
fi
echo "ensure_chromium: installing Debian chromium (headless HTML report test)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null 2>&1 && echo "ensure_chromium: $(chromium --version 2>/dev/null || echo installed)" >&2
