#!/usr/bin/env bash
# Make WordNet 3.0 available to imagenet52p's locator, installing Debian's
# wordnet-base + wordnet-sense-index when nothing is found and we may (root,
# or passwordless sudo).  Users with NLTK can instead run
#   python -m nltk.downloader wordnet
set -uo pipefail
VENV=${VENV:-.venv}
if found=$("$VENV/bin/imagenet52p" wordnet 2>/dev/null); then
  echo "$found"
  exit 0
fi
echo "WordNet 3.0 not found; installing Debian's wordnet-base and wordnet-sense-index" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "error: not root and no passwordless sudo; install WordNet 3.0 yourself:" >&2
    echo "  sudo apt-get install wordnet-base wordnet-sense-index   (Debian/Ubuntu)" >&2
    echo "  or: $VENV/bin/python -m nltk.downloader wordnet" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null 2>&1
  $SUDO apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null
} || { echo "error: apt-get install wordnet-base wordnet-sense-index failed" >&2; exit 1; }
"$VENV/bin/imagenet52p" wordnet
