#!/usr/bin/env bash
# Keeps the shared Rust target directory from filling the disk: when the filesystem holding it
# has less than MIN_FREE_GIB (default 20) free, drops the incremental caches (rebuilt on demand)
# and build artifacts not touched for three days. The kubelet of the local cluster evicts pods
# when the disk is nearly full, and a full disk fails builds, so this runs before every target.
set -euo pipefail
target=${1:?usage: disk-guard.sh TARGET_DIR}
min_free_gib=${MIN_FREE_GIB:-20}
[[ -d $target ]] || exit 0
free_gib() { df --output=avail -BG "$target" | tail -n1 | tr -dc '0-9'; }
free=$(free_gib)
((free < min_free_gib)) || exit 0
echo "[disk-guard] ${free} GiB free under $target (< ${min_free_gib}): pruning build caches"
rm -rf "$target"/debug/incremental "$target"/release/incremental
for profile in debug release; do
	[[ -d $target/$profile/deps ]] || continue
	find "$target/$profile/deps" -maxdepth 1 -type f -mtime +3 -delete
done
echo "[disk-guard] now $(free_gib) GiB free"
