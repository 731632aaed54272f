#!/bin/sh
echo "script-from-repo-ran"
