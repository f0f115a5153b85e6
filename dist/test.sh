#!/usr/bin/env bash
# Tests the release archives and install.sh end to end on this machine: what each archive
# holds, its .sha256, then install.sh (run by /bin/sh) against the archives served over
# http on 127.0.0.1 (`python3 -m http.server`): the right archive installed and running, a
# tampered archive refused with nothing installed, plain http to another host refused.
#
#   dist/test.sh                 # quick (CI): packages target/debug/upload as if it were the
#                                # x86_64 musl archive (dist/build.sh --binary), then tests it
#   dist/test.sh --archives DIR  # the real archives of dist/build.sh (e.g. dist/out): also
#                                # checks that the x86_64 musl binary is statically linked
#
# Prints one line per check and ends with `N passed, N failed`; exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

archives=
while [ $# -gt 0 ]; do
    case $1 in
        --archives) [ $# -ge 2 ] || { echo "--archives needs a directory" >&2; exit 2; }; archives=$2; shift 2 ;;
        *) echo "dist/test.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

passed=0
failed=0
check() { # NAME COMMAND...
    local name=$1
    shift
    if "$@"; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}

tmp=$(mktemp -d)
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

version=$(cargo pkgid -p upload | sed 's/.*[#@]//')
target=x86_64-unknown-linux-musl
if [ -z "$archives" ]; then
    [ -x target/debug/upload ] || cargo build --bin upload
    # Without its debug info (190 MB → 30 MB): the packing is what is tested, not the binary.
    strip --strip-debug -o "$tmp/upload" target/debug/upload
    archives=$tmp/release
    dist/build.sh --target "$target" --binary "$tmp/upload" --out "$archives" 2>"$tmp/build.log" \
        || { cat "$tmp/build.log" >&2; exit 1; }
    quick=true
else
    archives=$(cd "$archives" && pwd)
    quick=false
fi

# What every archive holds: binstall's layout, the docs, completions and man pages.
contents() { # ARCHIVE → its file list
    case $1 in
        *.zip) unzip -Z1 "$1" ;;
        *) tar -tzf "$1" ;;
    esac
}
holds_everything() { # ARCHIVE NAME EXE
    local list
    list=$(contents "$1")
    for f in "upload$3" README.md LICENSE-MIT LICENSE-APACHE completions/upload.bash completions/_upload \
        completions/upload.fish completions/_upload.ps1 completions/upload.elv man/man1/upload.1 \
        man/man1/upload-emulator.1 man/man1/upload-watch.1; do
        grep -qx "$2/$f" <<<"$list" || { echo "  $1 lacks $2/$f" >&2; return 1; }
    done
    # Nothing outside the one directory (an unpack never spills into the current one).
    ! grep -v "^$2/" <<<"$list" | grep -q .
}
found=0
for archive in "$archives"/upload-*-v"$version".tar.gz "$archives"/upload-*-v"$version".zip; do
    [ -f "$archive" ] || continue
    found=$((found + 1))
    file=$(basename "$archive")
    name=${file%.tar.gz}
    name=${name%.zip}
    exe=
    case $file in *windows*) exe=.exe ;; esac
    check "$file holds $name/upload$exe, README, licences, completions, man pages" holds_everything "$archive" "$name" "$exe"
    check "$file.sha256 verifies with sha256sum -c" bash -c "cd '$archives' && sha256sum --quiet -c '$file.sha256'"
done
check "archives found in $archives" test "$found" -gt 0
check "install.sh there names version $version" grep -qx "default_version=\"$version\"" "$archives/install.sh"
check "install.sh passes sh -n" sh -n "$archives/install.sh"

if ! $quick && [ -f "$archives/upload-$target-v$version.tar.gz" ]; then
    mkdir -p "$tmp/unpacked"
    tar -xzf "$archives/upload-$target-v$version.tar.gz" -C "$tmp/unpacked"
    bin=$tmp/unpacked/upload-$target-v$version/upload
    check "the $target binary is statically linked ($(file -b "$bin" | cut -d, -f1-5))" \
        bash -c "file -b '$bin' | grep -Eq 'static(ally|-pie) linked'"
    check "the $target binary runs here: $("$bin" --version)" bash -c "'$bin' --version | grep -q '^upload $version'"
    check "its man page renders as roff" bash -c "'$bin' man | grep -q '^\.TH upload 1 '"
fi

# Serve the archives on loopback and install from them, as a user would.
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$archives" >"$tmp/server.log" 2>&1 &
server=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$tmp/server.log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "the http server did not start: $(cat "$tmp/server.log")" >&2; exit 1; }
base=http://127.0.0.1:$port

install() { # DIR [install.sh ARGS...] → runs install.sh into DIR with a clean HOME
    local dir=$1
    shift
    env -u UPLOAD_VERSION -u UPLOAD_BASE_URL -u UPLOAD_INSTALL_DIR -u UPLOAD_TARGET HOME="$tmp/home" \
        PATH="/usr/bin:/bin" sh "$archives/install.sh" --to "$dir" "$@"
}

if install "$tmp/bin" --base-url "$base" --target "$target" >"$tmp/install.out" 2>&1; then ok=true; else ok=false; fi
check "install.sh installs from $base" $ok
want=$(tar -xzOf "$archives/upload-$target-v$version.tar.gz" "upload-$target-v$version/upload" | sha256sum | cut -d' ' -f1)
check "the installed binary is the archive's, byte for byte" \
    bash -c "[ \"\$(sha256sum < '$tmp/bin/upload' | cut -d' ' -f1)\" = '$want' ]"
check "the installed upload runs: $("$tmp/bin/upload" --version 2>&1)" \
    bash -c "'$tmp/bin/upload' --version | grep -q '^upload $version'"
check "install.sh said what it checked" grep -q "SHA-256 ok" "$tmp/install.out"
if [ "$(uname -m)" = x86_64 ]; then
    # Without --target: uname picks x86_64-unknown-linux-musl here.
    check "install.sh picks $target for this machine" \
        bash -c "HOME='$tmp/home2' UPLOAD_BASE_URL='$base' sh '$archives/install.sh' >'$tmp/pick.out' 2>&1; grep -q 'upload-$target-v$version.tar.gz' '$tmp/pick.out' && [ -x '$tmp/home2/.local/bin/upload' ]"
fi

# A tampered archive (one byte changed, the .sha256 left) is refused, and nothing installed.
mkdir -p "$tmp/bad"
cp "$archives/upload-$target-v$version.tar.gz" "$archives/upload-$target-v$version.tar.gz.sha256" "$tmp/bad/"
printf 'x' | dd of="$tmp/bad/upload-$target-v$version.tar.gz" bs=1 seek=100 conv=notrunc status=none
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$tmp/bad" >"$tmp/server2.log" 2>&1 &
bad_server=$!
for _ in $(seq 1 100); do
    bad_port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' "$tmp/server2.log" | head -1)
    [ -n "$bad_port" ] && break
    sleep 0.1
done
set +e
install "$tmp/bin-bad" --base-url "http://127.0.0.1:$bad_port" --target "$target" >"$tmp/bad.out" 2>&1
code=$?
set -e
kill "$bad_server" 2>/dev/null || true
check "a tampered archive: exit 4, SHA-256 mismatch named" bash -c "[ $code = 4 ] && grep -q 'SHA-256 mismatch' '$tmp/bad.out'"
check "a tampered archive: nothing installed" test ! -e "$tmp/bin-bad/upload"

refused() { # URL → install.sh refuses it before any download (exit 2, the reason on stderr)
    local out code=0
    out=$(install "$tmp/bin-refused" --base-url "$1" --target "$target" 2>&1) || code=$?
    [ "$code" = 2 ] && grep -q "refusing plain http\|not an https URL" <<<"$out" && [ ! -e "$tmp/bin-refused/upload" ]
}
check "plain http to another host is refused" refused "http://example.com/releases"
check "plain http to a name that starts like loopback is refused" refused "http://127.0.0.1.example.com/r"
check "ftp is refused" refused "ftp://127.0.0.1/r"
check "no version: exit 2 with the fix" bash -c "env -u UPLOAD_VERSION sh dist/install.sh --base-url '$base' --to '$tmp/x' 2>&1 | grep -q 'no version: pass --version'"
check "no base URL: exit 2 with the fix" bash -c "env -u UPLOAD_BASE_URL sh dist/install.sh --version '$version' --to '$tmp/x' 2>&1 | grep -q 'no download location'"
check "a machine without an archive (Darwin): told to build from source" \
    bash -c "mkdir -p '$tmp/fake' && printf '#!/bin/sh\ncase \$1 in -s) echo Darwin;; *) echo arm64;; esac\n' > '$tmp/fake/uname' && chmod +x '$tmp/fake/uname' && PATH='$tmp/fake:/usr/bin:/bin' sh '$archives/install.sh' --base-url '$base' --to '$tmp/x' 2>&1 | grep -q 'no macOS archive yet: build from source'"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
