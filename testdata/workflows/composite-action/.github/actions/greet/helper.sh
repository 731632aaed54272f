#!/usr/bin/env bash
set -euo pipefail
echo "result=helper-ok" >> "$GITHUB_OUTPUT"
