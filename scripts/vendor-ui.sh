#!/usr/bin/env bash
# Vendor the web UI's browser libraries into ui/vendor/ from exact npm package versions, so that
# neither users nor the build need Node: the files are committed and served as-is.
#
#   scripts/vendor-ui.sh          re-fetch every pinned package (`npm pack`), copy the files below
#                                 into ui/vendor/ and rewrite ui/vendor/SOURCES.tsv
#   scripts/vendor-ui.sh --check  no network, no npm: verify the files on disk against the sha256s
#                                 in ui/vendor/SOURCES.tsv (exit 1 on a mismatch, a missing file, or
#                                 a file under ui/vendor/ the manifest does not list)
#
# To bump a library: change its version in version_of below, run the script, review the diff of
# SOURCES.tsv and the files, and commit them together.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="$root/ui/vendor"
manifest="$vendor/SOURCES.tsv"
manifest_rel="ui/vendor/SOURCES.tsv"

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

# ---------------------------------------------------------------------------------------------
# --check: verify SOURCES.tsv against the files on disk.
# ---------------------------------------------------------------------------------------------
check() {
  if [ ! -f "$manifest" ]; then
    echo "error: $manifest_rel not found; run scripts/vendor-ui.sh" >&2
    exit 1
  fi
  local bad=0 n=0 path pkg ver src lic want note got listed
  listed="$(mktemp)"
  # shellcheck disable=SC2034 # pkg ver src lic note are only read to skip the columns
  while IFS=$'\t' read -r path pkg ver src lic want note; do
    case "$path" in '' | '#'*) continue ;; esac
    n=$((n + 1))
    printf '%s\n' "$path" >>"$listed"
    if [ ! -f "$root/$path" ]; then
      echo "MISSING  $path" >&2
      bad=1
      continue
    fi
    got="$(sha256 "$root/$path")"
    if [ "$got" != "$want" ]; then
      echo "MISMATCH $path: sha256 $got, manifest says $want" >&2
      bad=1
    fi
  done <"$manifest"
  # Every file under ui/vendor/ (but the manifest itself) must be listed.
  while IFS= read -r path; do
    [ "$path" = "$manifest_rel" ] && continue
    if ! grep -qxF "$path" "$listed"; then
      echo "UNLISTED $path (not in $manifest_rel)" >&2
      bad=1
    fi
  done < <(cd "$root" && find ui/vendor -type f | LC_ALL=C sort)
  rm -f "$listed"
  if [ "$bad" -ne 0 ]; then
    echo "error: ui/vendor/ does not match $manifest_rel; re-run scripts/vendor-ui.sh" >&2
    exit 1
  fi
  echo "ui/vendor ok: $n files match $manifest_rel"
}

# ---------------------------------------------------------------------------------------------
# Fetch mode.
# ---------------------------------------------------------------------------------------------

# Exact pinned versions (current stable as of writing: `npm view <pkg> version`).
version_of() {
  case "$1" in
    htm) echo 3.1.1 ;;
    marked) echo 18.2.1 ;;
    dompurify) echo 3.5.0 ;;
    @highlightjs/cdn-assets) echo 11.12.0 ;;
    # License text only: htm's preact/standalone.module.js bundles (minified) Preact 10.x, whose
    # MIT license must ship with it. No Preact code is taken from this package.
    preact) echo 10.29.8 ;;
    *)
      echo "error: no pinned version for $1" >&2
      return 1
      ;;
  esac
}

HLJS_LANGUAGES="bash c cpp css diff go java javascript json markdown python rust sql typescript xml yaml"

# One line per vendored file: output path (under ui/vendor/), npm package, path inside the package.
entries() {
  printf '%s\t%s\t%s\n' \
    preact-htm.js htm preact/standalone.module.js \
    marked.js marked lib/marked.esm.js \
    purify.js dompurify dist/purify.es.mjs \
    hljs/core.js @highlightjs/cdn-assets es/core.min.js
  local l
  for l in $HLJS_LANGUAGES; do
    printf '%s\t%s\t%s\n' "hljs/languages/$l.js" @highlightjs/cdn-assets "es/languages/$l.min.js"
  done
  printf '%s\t%s\t%s\n' \
    hljs/github.css @highlightjs/cdn-assets styles/github.min.css \
    hljs/github-dark.css @highlightjs/cdn-assets styles/github-dark.min.css \
    licenses/htm.txt htm LICENSE \
    licenses/preact.txt preact LICENSE \
    licenses/marked.txt marked LICENSE \
    licenses/dompurify.txt dompurify LICENSE \
    licenses/dompurify-MPL.txt dompurify LICENSE-MPL \
    licenses/highlightjs-cdn-assets.txt @highlightjs/cdn-assets LICENSE
}

fetch() {
  local cmd
  for cmd in npm node tar; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
      echo "error: $cmd not found; fetching needs Node.js/npm (--check does not)" >&2
      exit 1
    fi
  done

  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  local stage="$tmp/out"
  mkdir -p "$stage"

  # Pack and unpack each package once, into $tmp/pkg/<package name with / replaced by +>/.
  local pkg ver dir tgz got_ver
  while IFS= read -r pkg; do
    ver="$(version_of "$pkg")"
    dir="$tmp/pkg/${pkg//\//+}"
    mkdir -p "$dir"
    echo "npm pack $pkg@$ver ..."
    tgz="$(cd "$tmp" && npm pack --silent "$pkg@$ver" | tail -n1)"
    tar xzf "$tmp/$tgz" -C "$dir"
    got_ver="$(node -p 'require(process.argv[1]).version' "$dir/package/package.json")"
    if [ "$got_ver" != "$ver" ]; then
      echo "error: npm pack $pkg@$ver gave version $got_ver" >&2
      exit 1
    fi
  done < <(entries | cut -f2 | LC_ALL=C sort -u)

  local out src lic note
  {
    printf '# Vendored browser libraries of the web UI, written by scripts/vendor-ui.sh; verify with\n'
    printf '# scripts/vendor-ui.sh --check. Files are copied byte-for-byte unless the note says otherwise.\n'
    printf '# path\tpackage\tversion\tpackage_path\tlicense\tsha256\tnote\n'
  } >"$tmp/SOURCES.tsv"
  while IFS=$'\t' read -r out pkg src; do
    ver="$(version_of "$pkg")"
    dir="$tmp/pkg/${pkg//\//+}/package"
    if [ ! -f "$dir/$src" ]; then
      echo "error: $pkg@$ver has no $src" >&2
      exit 1
    fi
    mkdir -p "$(dirname "$stage/$out")"
    cp "$dir/$src" "$stage/$out"
    lic="$(node -p 'const l = require(process.argv[1]).license; typeof l === "string" ? l : (l && l.type) || "UNKNOWN"' "$dir/package.json")"
    note="-"
    [ "$pkg" = preact ] && note="license only: Preact 10.x is bundled inside preact-htm.js"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "ui/vendor/$out" "$pkg" "$ver" "$src" "$lic" \
      "$(sha256 "$stage/$out")" "$note" >>"$tmp/SOURCES.tsv"
  done < <(entries)

  # The UI imports these as ES modules by relative path, and should be able to run under a CSP
  # without 'unsafe-eval': refuse bare-specifier imports (they would need an import map or a
  # bundler) and eval / new Function. (A keyword right after a quote is a string in a grammar's
  # keyword list, like hljs's `"import","export"`, not an import.)
  local js bad=0
  js="$(cd "$stage" && find . -name '*.js' | LC_ALL=C sort)"
  # shellcheck disable=SC2086 # $js is a list of plain relative paths
  if (cd "$stage" && grep -nEo "(^|[^\"'A-Za-z0-9_\$.])(from|import)[[:space:]]*\(?[[:space:]]*['\"][^./'\"][^'\"]*['\"]" $js); then
    echo "error: the bare-specifier imports above would not load in a browser" >&2
    bad=1
  fi
  # shellcheck disable=SC2086
  if (cd "$stage" && grep -nEo "(^|[^.A-Za-z0-9_\$])eval\(|new Function\(" $js); then
    echo "error: eval / new Function above would need a CSP with 'unsafe-eval'" >&2
    bad=1
  fi
  [ "$bad" -eq 0 ] || exit 1

  rm -rf "$vendor"
  mkdir -p "$(dirname "$vendor")"
  cp -R "$stage" "$vendor"
  cp "$tmp/SOURCES.tsv" "$manifest"
  echo "wrote $(grep -vc '^#' "$manifest") files under ui/vendor/ and $manifest_rel"
}

case "${1:-}" in
  --check) check ;;
  "") fetch ;;
  -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
