#!/usr/bin/env bash
# docs/ARCHITECTURE.md is a codemap: every Rust source file of the
# workspace is named there (by its path from the repository root), so a new
# file cannot arrive without its line in the map.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=$(git ls-files '*.rs' | while read -r file; do
  grep -qF "\`$file\`" docs/ARCHITECTURE.md || echo "$file"
done)
if [ -n "$missing" ]; then
  echo "codemap: docs/ARCHITECTURE.md does not name these source files (add each as \`path\` with what it owns):" >&2
  echo "$missing" | sed 's/^/  /' >&2
  exit 1
fi
echo "codemap: docs/ARCHITECTURE.md names all $(git ls-files '*.rs' | wc -l) source files"
