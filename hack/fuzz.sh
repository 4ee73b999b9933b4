#!/usr/bin/env bash
# Runs every fuzz target of the module for the given time each (default
# 30s), minimizing a failing input for at most the second argument
# (default 5s).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-30s}
minimizetime=${2:-5s}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "=== $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^$target\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimizetime" "$pkg"
	done
done
