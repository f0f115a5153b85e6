#!/usr/bin/env bash
# Builds the release archives of `upload` on this (Linux x86_64) machine:
#
#   upload-x86_64-unknown-linux-musl-vVERSION.tar.gz    static, through `cargo zigbuild`
#   upload-aarch64-unknown-linux-musl-vVERSION.tar.gz   static, through `cargo zigbuild`
#   upload-x86_64-pc-windows-gnu-vVERSION.zip           linked by mingw-w64
#
# each with a `.sha256` (sha256sum's format), and an install.sh that knows the version (and the
# download location, with --base-url). Names follow cargo-binstall's defaults: the archive
# `{name}-{target}-v{version}.{format}` holds the directory `{name}-{target}-v{version}/` with
# the binary, README.md, LICENSE-MIT, LICENSE-APACHE, completions/ and man/man1/.
#
#   dist/build.sh                         # every target, into dist/out/
#   dist/build.sh --target x86_64-unknown-linux-musl --out /tmp/rel
#   dist/build.sh --install               # first install what is missing (rustup targets,
#                                         # ziglang + cargo-zigbuild from PyPI, Debian's mingw-w64)
#   dist/build.sh --base-url https://github.com/OWNER/upload/releases/download/v0.1.0
#   dist/build.sh --target x86_64-unknown-linux-musl --binary target/debug/upload --out /tmp/t
#                                         # package a binary already built (dist/test.sh does)
#
# Archives are reproducible for a given commit and toolchain: file times are the commit's,
# owners are 0, entries sorted, gzip without a name or time.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-pc-windows-gnu)
targets=()
out=dist/out
base_url=
install=false
prebuilt=

die() {
    echo "dist/build.sh: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --target) [ $# -ge 2 ] || die "--target needs a target"; targets+=("$2"); shift 2 ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
        --base-url) [ $# -ge 2 ] || die "--base-url needs a URL"; base_url=${2%/}; shift 2 ;;
        --install) install=true; shift ;;
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; prebuilt=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
if [ -n "$prebuilt" ]; then
    [ ${#targets[@]} -eq 1 ] || die "--binary packages one binary: name its --target once"
    [ -x "$prebuilt" ] || die "--binary $prebuilt is not an executable file"
fi
case $base_url in
    "" | https://*) ;;
    *) die "--base-url must be an https URL (install.sh refuses plain http but to loopback)" ;;
esac
[[ $base_url =~ ^[A-Za-z0-9:/._~%+=,@-]*$ ]] || die "--base-url has characters a URL of the archives should not: '$base_url'"
for t in "${targets[@]}"; do
    case " ${all_targets[*]} " in
        *" $t "*) ;;
        *) die "unknown target '$t' (one of: ${all_targets[*]})" ;;
    esac
done

version=$(cargo pkgid -p upload | sed 's/.*[#@]//')
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "cannot read the version of the upload package (got '$version')"
# The commit's time for every file in the archives (else now: a tree without git).
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)

# What each target needs, installed with --install, else named.
need() { # WHAT INSTALL-COMMAND
    if $install; then
        echo "dist/build.sh: installing $1: $2" >&2
        bash -c "$2" >&2 || die "could not install $1"
    else
        die "$1 is missing: run $2 (or dist/build.sh --install)"
    fi
}
installed_targets=$(rustup target list --installed 2>/dev/null || true)
if [ -z "$prebuilt" ]; then for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed_targets" || need "the Rust target $t" "rustup target add $t"
    case $t in
        *-linux-musl)
            if ! command -v cargo-zigbuild >/dev/null || ! python3 -c 'import ziglang' 2>/dev/null; then
                need "cargo-zigbuild and zig" "python3 -m pip install --quiet ziglang cargo-zigbuild"
                hash -r
            fi
            ;;
        *-windows-gnu)
            command -v x86_64-w64-mingw32-gcc >/dev/null \
                || need "mingw-w64" "apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null"
            ;;
    esac
done; fi
case " ${targets[*]} " in
    *windows*) command -v zip >/dev/null || need "zip" "apt-get install -y -qq zip >/dev/null" ;;
esac

target_dir=${CARGO_TARGET_DIR:-target}
binary() { # TARGET → the built binary's path
    if [ -n "$prebuilt" ]; then
        echo "$prebuilt"
        return
    fi
    case $1 in
        *-windows-*) echo "$target_dir/$1/release/upload.exe" ;;
        *) echo "$target_dir/$1/release/upload" ;;
    esac
}

mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -z "$prebuilt" ]; then for t in "${targets[@]}"; do
    echo "dist/build.sh: building $t" >&2
    start=$SECONDS
    case $t in
        *-linux-musl) cargo zigbuild --release --locked --bin upload --target "$t" ;;
        *-windows-gnu) cargo build --release --locked --bin upload --target "$t" ;;
    esac
    echo "dist/build.sh: $t built in $((SECONDS - start)) s" >&2
done; fi

# Completions and man pages come from a binary that runs here (they are the same for every
# target: the same clap definitions).
runner=
for t in "${targets[@]}"; do
    if "$(binary "$t")" --version >/dev/null 2>&1; then
        runner=$(binary "$t")
        break
    fi
done
if [ -z "$runner" ]; then
    cargo build --release --locked --bin upload
    runner=$target_dir/release/upload
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
extras=$stage/extras
mkdir -p "$extras/completions" "$extras/man/man1"
for shell in bash zsh fish powershell elvish; do
    case $shell in
        bash) file=upload.bash ;;
        zsh) file=_upload ;;
        fish) file=upload.fish ;;
        powershell) file=_upload.ps1 ;;
        elvish) file=upload.elv ;;
    esac
    "$runner" completions "$shell" >"$extras/completions/$file"
done
"$runner" man --out-dir "$extras/man/man1"
cp README.md LICENSE-MIT LICENSE-APACHE "$extras/"

for t in "${targets[@]}"; do
    name=upload-$t-v$version
    dir=$stage/$name
    mkdir -p "$dir"
    cp -R "$extras/." "$dir/"
    case $t in
        *-windows-*)
            cp "$(binary "$t")" "$dir/upload.exe"
            archive=$name.zip
            ;;
        *)
            cp "$(binary "$t")" "$dir/upload"
            archive=$name.tar.gz
            ;;
    esac
    chmod -R u=rwX,go=rX "$dir"
    chmod 755 "$dir"/upload*
    find "$dir" -exec touch -h -d "@$epoch" {} +
    rm -f "$out/$archive"
    case $archive in
        *.zip) (cd "$stage" && find "$name" -print | LC_ALL=C sort | zip -q -X -@ "$out/$archive") ;;
        *) tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf - "$name" \
            | gzip -9 -n >"$out/$archive" ;;
    esac
    (cd "$out" && sha256sum "$archive" >"$archive.sha256")
done

# The installer of this release: it knows its version, and where to download from when told.
sed -e "s|^default_version=\"\"$|default_version=\"$version\"|" \
    -e "s|^default_base_url=\"\"$|default_base_url=\"$base_url\"|" dist/install.sh >"$out/install.sh"
chmod 755 "$out/install.sh"
grep -q "^default_version=\"$version\"$" "$out/install.sh" || die "could not write the version into install.sh"

echo "dist/build.sh: in $out:" >&2
(cd "$out" && for t in "${targets[@]}"; do ls -l "upload-$t-v$version".*; done; ls -l install.sh) >&2
