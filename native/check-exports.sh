#!/usr/bin/env bash
# Fails when a CramNative_* function declared in cramnative.h is not exported by the library.
set -euo pipefail
lib=$1
here=$(cd "$(dirname "$0")" && pwd)
missing=0
for f in $(grep -oE 'CramNative_[A-Za-z]+\(' "$here/cramnative.h" | tr -d '(' | sort -u); do
  if ! nm -D --defined-only "$lib" | grep -qw "$f"; then echo "missing export: $f" >&2; missing=1; fi
done
exit $missing
