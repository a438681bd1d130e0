#!/usr/bin/env bash
# LEAD++'s published descriptions through `makd import descriptions` and back (issue 25).
# Usage: bench/lead_pp_descriptions.sh GIT_DIR_OF_HuiGuanLab/LEAD-pp  (a clone or the fetch tool's mirror)
set -euo pipefail
repo=$1; work=$(mktemp -d); makd=${MAKD:-python -m makd_cli}
for f in $(git --git-dir "$repo" ls-tree --name-only HEAD text_description/); do
  git --git-dir "$repo" show "HEAD:$f" > "$work/$(basename "$f")"
  if ! msg=$($makd import descriptions "$work/$(basename "$f")" -o "$work/d.jsonl" 2>&1); then echo "$f: refused: $msg"; continue; fi
  echo -n "${msg%% description*} descriptions, "
  $makd export descriptions "$work/d.jsonl" -o "$work/back.csv" > /dev/null
  cmp -s "$work/$(basename "$f")" "$work/back.csv" && echo "$f: identical after import + export" || echo "$f: DIFFERS"
done
rm -rf "$work"
