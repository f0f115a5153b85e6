#!/bin/sh
# Installs `upload` from its release archives, without a Rust toolchain: picks the archive of
# this machine (uname -s / -m → the target), downloads it and its .sha256, checks the SHA-256,
# and puts the binary in ~/.local/bin (or $UPLOAD_INSTALL_DIR).
#
#   sh install.sh                          # the version and place this copy was made for
#   UPLOAD_BASE_URL=https://host/releases/v0.1.0 UPLOAD_VERSION=0.1.0 sh install.sh
#   sh install.sh --base-url URL --version 0.1.0 --to /usr/local/bin
#
# Settings (flag, else environment variable, else what dist/build.sh wrote into this copy):
#   --base-url URL   UPLOAD_BASE_URL     where the archives are: URL/upload-TARGET-vVERSION.tar.gz
#                                        (https; plain http only to 127.0.0.0/8, localhost, [::1])
#   --version V      UPLOAD_VERSION      the version to install (0.1.0)
#   --to DIR         UPLOAD_INSTALL_DIR  where the binary goes (default ~/.local/bin)
#   --target T       UPLOAD_TARGET       the archive's target, when the guess is wrong
#
# Exit codes: 0 installed, 2 bad setting or unsupported machine, 3 download failed, 4 checksum
# mismatch or broken archive. Needs curl, tar (unzip on Windows), and sha256sum or shasum.
set -eu

# Written by dist/build.sh into the copy it puts beside the archives (empty in the repository).
default_version=""
default_base_url=""

fail() { # CODE MESSAGE...
    code=$1
    shift
    printf 'install.sh: error: %s\n' "$*" >&2
    exit "$code"
}

say() {
    printf 'install.sh: %s\n' "$*" >&2
}

version=${UPLOAD_VERSION:-$default_version}
base_url=${UPLOAD_BASE_URL:-$default_base_url}
install_dir=${UPLOAD_INSTALL_DIR:-}
target=${UPLOAD_TARGET:-}

while [ $# -gt 0 ]; do
    case $1 in
        --base-url) [ $# -ge 2 ] || fail 2 "--base-url needs a URL"; base_url=$2; shift 2 ;;
        --base-url=*) base_url=${1#*=}; shift ;;
        --version) [ $# -ge 2 ] || fail 2 "--version needs a version"; version=$2; shift 2 ;;
        --version=*) version=${1#*=}; shift ;;
        --to) [ $# -ge 2 ] || fail 2 "--to needs a directory"; install_dir=$2; shift 2 ;;
        --to=*) install_dir=${1#*=}; shift ;;
        --target) [ $# -ge 2 ] || fail 2 "--target needs a target"; target=$2; shift 2 ;;
        --target=*) target=${1#*=}; shift ;;
        -h | --help)
            cat <<EOF
install.sh [--base-url URL] [--version V] [--to DIR] [--target T]
Installs upload from its release archive for this machine, after checking its SHA-256.
  --base-url URL  (UPLOAD_BASE_URL)     the directory of the archives${default_base_url:+ (default $default_base_url)}
  --version V     (UPLOAD_VERSION)      the version${default_version:+ (default $default_version)}
  --to DIR        (UPLOAD_INSTALL_DIR)  where the binary goes (default ~/.local/bin)
  --target T      (UPLOAD_TARGET)       x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, x86_64-pc-windows-gnu
EOF
            exit 0
            ;;
        *) fail 2 "unknown argument '$1' (see --help)" ;;
    esac
done

[ -n "$version" ] || fail 2 "no version: pass --version 0.1.0 or set UPLOAD_VERSION (the install.sh of a release knows its own)"
case $version in
    v*) version=${version#v} ;;
esac
case $version in
    *[!0-9A-Za-z.+-]* | "") fail 2 "'$version' is not a version (e.g. 0.1.0)" ;;
esac
[ -n "$base_url" ] || fail 2 "no download location: pass --base-url URL or set UPLOAD_BASE_URL (the directory holding upload-TARGET-v$version.tar.gz)"
base_url=${base_url%/}

# https, or plain http to this machine only (a local mirror, a test): never http elsewhere.
scheme=$(printf '%s' "${base_url%%://*}" | tr '[:upper:]' '[:lower:]')
rest=${base_url#*://}
hostport=${rest%%/*}
hostport=${hostport##*@}
case $hostport in
    \[*) host=${hostport%%]*}] ;;
    *) host=${hostport%%:*} ;;
esac
host=$(printf '%s' "$host" | tr '[:upper:]' '[:lower:]')
case $scheme in
    https) proto='=https' ;;
    http)
        if printf '%s\n' "$host" | grep -Eq '^(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|localhost|\[::1\])$'; then
            proto='=http,https'
        else
            fail 2 "refusing plain http to $host: use https (plain http only to 127.0.0.1, localhost or [::1])"
        fi
        ;;
    *) fail 2 "'$base_url' is not an https URL" ;;
esac

# The target of this machine: static musl binaries on Linux, the GNU toolchain's on Windows.
if [ -z "$target" ]; then
    os=$(uname -s)
    arch=$(uname -m)
    case $arch in
        x86_64 | amd64 | x64) arch=x86_64 ;;
        aarch64 | arm64 | armv8*) arch=aarch64 ;;
        *) fail 2 "no archive for the processor '$arch': build from source (cargo install --locked --path . in a clone)" ;;
    esac
    case $os in
        Linux) target=$arch-unknown-linux-musl ;;
        MINGW* | MSYS* | CYGWIN* | Windows_NT)
            [ "$arch" = x86_64 ] || fail 2 "no Windows archive for $arch: build from source"
            target=x86_64-pc-windows-gnu
            ;;
        Darwin) fail 2 "no macOS archive yet: build from source (cargo install --locked --path . in a clone; see the README)" ;;
        *) fail 2 "no archive for the system '$os': build from source (cargo install --locked --path . in a clone)" ;;
    esac
fi
case $target in
    *-windows-*) format=zip; exe=.exe ;;
    *) format=tar.gz; exe= ;;
esac

if [ -z "$install_dir" ]; then
    [ -n "${HOME:-}" ] || fail 2 "HOME is not set: pass --to DIR or set UPLOAD_INSTALL_DIR"
    install_dir=$HOME/.local/bin
fi

command -v curl >/dev/null 2>&1 || fail 2 "curl is missing: install it, or download the archive by hand (see the README)"

name=upload-$target-v$version
archive=$name.$format
tmp=$(mktemp -d 2>/dev/null || mktemp -d -t upload-install)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fetch() { # URL FILE
    curl --proto "$proto" --proto-redir '=https' --tlsv1.2 --fail --silent --show-error --location \
        --retry 3 --connect-timeout 20 --output "$2" "$1" \
        || fail 3 "could not download $1"
}

say "downloading $base_url/$archive"
fetch "$base_url/$archive" "$tmp/$archive"
fetch "$base_url/$archive.sha256" "$tmp/$archive.sha256"

# The .sha256 is `HASH  NAME` (sha256sum's format): the hash must be that of this archive.
want=$(awk 'NR == 1 { print tolower($1) }' "$tmp/$archive.sha256")
listed=$(awk 'NR == 1 { sub(/^\*/, "", $2); print $2 }' "$tmp/$archive.sha256")
[ "$listed" = "$archive" ] || fail 4 "$archive.sha256 names '$listed', not $archive"
if command -v sha256sum >/dev/null 2>&1; then
    got=$(sha256sum "$tmp/$archive" | awk '{ print $1 }')
elif command -v shasum >/dev/null 2>&1; then
    got=$(shasum -a 256 "$tmp/$archive" | awk '{ print $1 }')
else
    fail 2 "neither sha256sum nor shasum is installed: cannot check the download"
fi
printf '%s\n' "$want" | grep -Eq '^[0-9a-f]{64}$' || fail 4 "$archive.sha256 holds no SHA-256"
[ "$got" = "$want" ] || fail 4 "SHA-256 mismatch for $archive: expected $want, got $got (nothing installed)"
say "SHA-256 ok: $got"

case $format in
    tar.gz) tar -xzf "$tmp/$archive" -C "$tmp" || fail 4 "cannot unpack $archive" ;;
    zip)
        if command -v unzip >/dev/null 2>&1; then
            unzip -q "$tmp/$archive" -d "$tmp" || fail 4 "cannot unpack $archive"
        else
            tar -xf "$tmp/$archive" -C "$tmp" || fail 4 "cannot unpack $archive"
        fi
        ;;
esac
bin=$tmp/$name/upload$exe
[ -f "$bin" ] || fail 4 "$archive holds no $name/upload$exe"

# A new file renamed over the old one: a running `upload` keeps its copy.
mkdir -p "$install_dir" || fail 2 "cannot create $install_dir"
cp "$bin" "$install_dir/.upload$exe.new.$$" || fail 2 "cannot write into $install_dir"
chmod 755 "$install_dir/.upload$exe.new.$$"
mv -f "$install_dir/.upload$exe.new.$$" "$install_dir/upload$exe" || fail 2 "cannot write $install_dir/upload$exe"

installed=$("$install_dir/upload$exe" --version 2>/dev/null) || installed="upload $version (it does not run here: check --target)"
say "installed $installed into $install_dir/upload$exe"
case ":${PATH:-}:" in
    *":$install_dir:"*) ;;
    *) say "$install_dir is not on PATH: add it (export PATH=\"$install_dir:\$PATH\")" ;;
esac
say "shell completions: upload completions bash|zsh|fish|powershell|elvish; the man page: upload man"
