#!/usr/bin/env bash
set -euo pipefail
echo "self-action-ran-$((6 * 7))"
echo "word=$1" >> "$GITHUB_OUTPUT"
