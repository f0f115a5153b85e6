#!/usr/bin/env python3
"""Apertur's official Python SDK (apertur-sdk 0.2.0, PyPI) as the emulator's judge (issue 29).

Starts `upload emulator` (the binary given as the first argument) on loopback, requiring the
SDK's request signatures, and drives it through every call the SDK offers for sessions, images,
uploads, long polling and destinations. Each answer is checked against the type the SDK's own
`apertur/types.py` names for it (TypedDicts read at run time: required keys present, every key
the type knows of the type it says), and against what the call did (sizes, bytes, counts).

Where the SDK and the seed (`seeds/apertur-upload-sessions.txt`) disagree the emulator follows
the seed by default: a delivery status without `pollFrom` is the seed's shape, checked as such
here; with `pollFrom` (or `--apertur-delivery-shape sdk`) it is the SDK's.

Run by `.ci/apertur-sdk` (which makes the virtual environment); exits non-zero, naming the
call and the field, at the first difference.
"""

import datetime
import hashlib
import os
import subprocess
import sys
import threading
import time
import typing

import apertur
from apertur import types as T
from apertur.errors import AperturError, AuthenticationError, NotFoundError, ValidationError

PROJECT = "emulator-project"
SECRET = "sdk-judge-signing-secret"
CHECKS = []


def fail(message):
    raise AssertionError(message)


def shape(value, tp, where):
    """`value` has the shape the SDK's type `tp` names."""
    if tp is typing.Any:
        return
    if typing.is_typeddict(tp):
        if not isinstance(value, dict):
            fail(f"{where}: {tp.__name__} expected, got {type(value).__name__}: {value!r}")
        hints = typing.get_type_hints(tp)
        for key in sorted(tp.__required_keys__):
            if key not in value:
                fail(f"{where}: {tp.__name__} lacks required {key!r}: {value!r}")
        for key, v in value.items():
            if key in hints:
                shape(v, hints[key], f"{where}.{key}")
        return
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        errors = []
        for arg in args:
            try:
                shape(value, arg, where)
                return
            except AssertionError as e:
                errors.append(str(e))
        fail(f"{where}: none of {tp} fits {value!r} ({'; '.join(errors)})")
    if origin is list:
        if not isinstance(value, list):
            fail(f"{where}: a list expected, got {value!r}")
        for i, item in enumerate(value):
            shape(item, args[0], f"{where}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            fail(f"{where}: an object expected, got {value!r}")
        for k, v in value.items():
            shape(k, args[0], f"{where} key")
            shape(v, args[1], f"{where}.{k}")
        return
    if tp is type(None):
        ok = value is None
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        fail(f"{where}: the judge does not know the type {tp!r}")
    if not ok:
        fail(f"{where}: {getattr(tp, '__name__', tp)} expected, got {value!r}")


def judged(name, value, tp, need=()):
    """Checks `value` against the SDK's `tp`, and that the keys `need` (of a type whose keys are
    all optional) are there."""
    shape(value, tp, name)
    for key in need:
        if key not in value:
            fail(f"{name}: {key!r} missing: {value!r}")
    CHECKS.append(name)
    return value


def raises(name, kind, call, status=None, code=None):
    try:
        call()
    except kind as e:
        if status is not None and e.status_code != status:
            fail(f"{name}: HTTP {status} expected, got {e.status_code} ({e})")
        if code is not None and e.code != code:
            fail(f"{name}: code {code} expected, got {e.code} ({e})")
        CHECKS.append(name)
        return e
    fail(f"{name}: {kind.__name__} expected, the call succeeded")


def iso(t):
    return t.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def image(n, size):
    """A test 'image' (the emulator does not decode images)."""
    return hashlib.sha256(str(n).encode()).digest() * (size // 32) + b"x" * (size % 32)


def start_emulator(binary, *extra):
    proc = subprocess.Popen(
        [binary, "emulator", "--memory", "--apertur-signing-secret", SECRET, "--apertur-delivery-step-ms", "50", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    found = {}
    timer = threading.Timer(60, proc.kill)
    timer.start()
    for line in proc.stdout:
        key, _, value = line.strip().partition(": ")
        if key in ("api", "token") and key not in found:
            found[key] = value
        if len(found) == 2:
            break
    timer.cancel()
    if len(found) != 2:
        proc.kill()
        fail(f"the emulator did not announce its URL and token (exit {proc.wait()})")
    # Keep reading its stdout so that it never blocks on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, found["api"], found["token"]


def run(base, token):
    sdk = apertur.Apertur(api_key=token, base_url=base, signing_secret=SECRET)

    # ── sessions ──────────────────────────────────────────────────────
    s = judged(
        "sessions.create (password, tags, limits)",
        sdk.sessions.create(tags=["sdk", "judge"], max_images=10, expires_in_hours=2, password="pass-1234",
                            allowed_mime_types=["image/jpeg", "image/png"]),
        T.CreateSessionResult,
    )
    if not (s["id"] == s["uuid"] and s["password_protected"] and not s["long_polling"] and s["destinations"]):
        fail(f"sessions.create: {s!r}")
    sid = s["id"]
    got = judged("sessions.get", sdk.sessions.get(sid), T.Session,
                 need=("id", "status", "expiresAt", "effectiveMaxImages", "effectiveAllowedMimeTypes",
                       "password_protected"))
    if (got["id"], got["effectiveMaxImages"], got["password_protected"]) != (sid, 10, True):
        fail(f"sessions.get: {got!r}")
    if sorted(got["effectiveAllowedMimeTypes"]) != ["image/jpeg", "image/png"] or got.get("tags") != ["sdk", "judge"]:
        fail(f"sessions.get: {got!r}")
    upd = judged("sessions.update", sdk.sessions.update(sid, max_images=5, max_image_size_mb=20), T.Session,
                 need=("id", "effectiveMaxImages"))
    if upd["effectiveMaxImages"] != 5:
        fail(f"sessions.update: max_images not applied: {upd!r}")
    ok = judged("sessions.verify_password (right)", sdk.sessions.verify_password(sid, "pass-1234"), typing.Dict[str, bool])
    bad = judged("sessions.verify_password (wrong)", sdk.sessions.verify_password(sid, "nope-5678"), typing.Dict[str, bool])
    if ok != {"valid": True} or bad != {"valid": False}:
        fail(f"sessions.verify_password: {ok!r} / {bad!r}")
    plain = judged("sessions.create (defaults)", sdk.sessions.create(), T.CreateSessionResult)
    if plain["password_protected"] or plain["long_polling"]:
        fail(f"sessions.create (defaults): {plain!r}")

    # ── images ────────────────────────────────────────────────────────
    data = image(1, 70_001)
    up = judged("upload.image (password)",
                sdk.upload.image(sid, data, filename="one.jpg", mime_type="image/jpeg", password="pass-1234"),
                T.UploadResult)
    if (up["filename"], up["size_bytes"], up["destinations"]) != ("one.jpg", len(data), len(s["destinations"])):
        fail(f"upload.image: {up!r}")
    raises("upload.image (no password) is refused", AperturError,
           lambda: sdk.upload.image(sid, data, filename="two.jpg"), status=403, code="PASSWORD_REQUIRED")
    raises("upload.image (wrong password) is refused", AperturError,
           lambda: sdk.upload.image(sid, data, filename="two.jpg", password="nope-5678"), status=403,
           code="INVALID_PASSWORD")
    raises("upload.image (a type the session refuses)", ValidationError,
           lambda: sdk.upload.image(sid, data, filename="two.webp", mime_type="image/webp", password="pass-1234"))
    # A password removed with `password=None` (the SDK's way) is no longer asked.
    judged("sessions.update (password removed)", sdk.sessions.update(sid, password=None), T.Session)
    judged("upload.image (password removed)", sdk.upload.image(sid, image(2, 999), filename="two.png",
                                                              mime_type="image/png"), T.UploadResult)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"apertur-sdk-{os.getpid()}.jpg")
    with open(path, "wb") as f:
        f.write(image(3, 4096))
    try:
        up3 = judged("upload.image (a path)", sdk.upload.image(plain["id"], path), T.UploadResult)
    finally:
        os.remove(path)
    if (up3["filename"], up3["size_bytes"]) != (os.path.basename(path), 4096):
        fail(f"upload.image (a path): {up3!r}")

    # ── lists ─────────────────────────────────────────────────────────
    page = judged("sessions.list", sdk.sessions.list(page=1, page_size=1), T.SessionsListPage)
    if (page["total"], page["page"], page["pageSize"], page["totalPages"], len(page["data"])) != (2, 1, 1, 2, 1):
        fail(f"sessions.list: {page!r}")
    for row in page["data"]:
        judged("sessions.list row", row, T.SessionRow, need=("id", "createdAt", "status", "imagesCount"))
    recent = judged("sessions.recent", sdk.sessions.recent(limit=5), typing.List[T.SessionRow])
    if [r["id"] for r in recent] != [plain["id"], sid] or recent[1]["imagesCount"] != 2:
        fail(f"sessions.recent: newest first, with the image counts: {recent!r}")
    uploads = judged("uploads.list", sdk.uploads.list(page=1, page_size=10), T.UploadsListPage)
    if uploads["total"] != 3 or len(uploads["data"]) != 3:
        fail(f"uploads.list: {uploads!r}")
    for row in uploads["data"]:
        judged("uploads.list row", row, T.UploadRow, need=("id", "filename", "sizeBytes", "createdAt", "sessionId", "status"))
    rows = judged("uploads.recent", sdk.uploads.recent(limit=2), typing.List[T.UploadRow])
    if len(rows) != 2 or rows[0]["id"] != up3["id"] or rows[0]["sizeBytes"] != 4096 or rows[0]["sessionId"] != plain["id"]:
        fail(f"uploads.recent: {rows!r}")

    # ── delivery status ───────────────────────────────────────────────
    # The seed's shape by default (the emulator's choice where the two disagree)...
    seed = sdk.sessions.delivery_status(sid)
    if set(seed) < {"session_id", "images"} or seed["session_id"] != sid or len(seed["images"]) != 2:
        fail(f"sessions.delivery_status: the seed's shape expected: {seed!r}")
    for img in seed["images"]:
        for d in img["deliveries"]:
            if d["status"] not in ("pending", "delivered", "failed"):
                fail(f"sessions.delivery_status: a seed status expected: {d!r}")
    CHECKS.append("sessions.delivery_status (the seed's shape)")
    # ...the SDK's with pollFrom: a long poll answered once the deliveries moved (50 ms steps).
    since = iso(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1))
    st = judged("sessions.delivery_status (pollFrom)", sdk.sessions.delivery_status(sid, poll_from=since, timeout=30),
                T.DeliveryStatusResponse)
    if st["status"] not in ("pending", "active", "completed", "expired") or len(st["files"]) != 2:
        fail(f"sessions.delivery_status (pollFrom): {st!r}")
    for f in st["files"]:
        for d in f["destinations"]:
            if d["status"] not in ("pending", "sending", "sent", "failed", "retrying"):
                fail(f"sessions.delivery_status (pollFrom): an SDK status expected: {d!r}")

    # ── long polling ──────────────────────────────────────────────────
    lp = judged("sessions.create (long polling)", sdk.sessions.create(long_polling=True), T.CreateSessionResult)
    if not lp["long_polling"]:
        fail(f"sessions.create (long polling): {lp!r}")
    sent = {}
    for n in range(3):
        blob = image(10 + n, 5_000 + n)
        r = sdk.upload.image(lp["id"], blob, filename=f"lp{n}.jpg")
        if not r["long_polling"]:
            fail(f"upload.image (long polling): {r!r}")
        sent[r["id"]] = blob
    queue = judged("polling.list", sdk.polling.list(lp["id"]), T.PollResult)
    if sorted(i["id"] for i in queue["images"]) != sorted(sent):
        fail(f"polling.list: {queue!r}")
    first = queue["images"][0]
    got = sdk.polling.download(lp["id"], first["id"])
    if got != sent[first["id"]] or first["size_bytes"] != len(got):
        fail(f"polling.download: {len(got)} bytes, not the {first['size_bytes']} sent")
    CHECKS.append("polling.download")
    judged("polling.ack", sdk.polling.ack(lp["id"], first["id"]), typing.Dict[str, str])
    left = sdk.polling.list(lp["id"])["images"]
    if first["id"] in [i["id"] for i in left] or len(left) != 2:
        fail(f"polling.ack: the image is still queued: {left!r}")
    seen = {}
    sdk.polling.poll_and_process(lp["id"], lambda img, blob: seen.__setitem__(img["id"], blob), interval=0.05, timeout=1.0)
    if seen != {k: v for k, v in sent.items() if k != first["id"]} or sdk.polling.list(lp["id"])["images"]:
        fail(f"polling.poll_and_process: {sorted(seen)} taken, queue {sdk.polling.list(lp['id'])!r}")
    CHECKS.append("polling.poll_and_process")

    # ── destinations ──────────────────────────────────────────────────
    before = judged("destinations.list", sdk.destinations.list(PROJECT), typing.List[T.Destination])
    for d in before:
        judged("destinations.list row", d, T.Destination, need=("id", "type", "name", "isActive"))
    made = judged(
        "destinations.create",
        sdk.destinations.create(PROJECT, type="webhook", name="SDK hook",
                                config={"url": "https://hooks.example.com/in", "secret": "s3cr3t-value"}),
        T.Destination,
        need=("id", "type", "name", "config", "isActive"),
    )
    if (made["type"], made["name"], made["isActive"]) != ("webhook", "SDK hook", True):
        fail(f"destinations.create: {made!r}")
    if "s3cr3t-value" in repr(made):
        fail(f"destinations.create: a secret of the config is shown: {made!r}")
    changed = judged("destinations.update",
                     sdk.destinations.update(PROJECT, made["id"], name="SDK hook 2", is_active=False), T.Destination,
                     need=("id", "name", "isActive"))
    if (changed["name"], changed["isActive"]) != ("SDK hook 2", False):
        fail(f"destinations.update: {changed!r}")
    tested = judged("destinations.test", sdk.destinations.test(PROJECT, made["id"]), T.TestDestinationResult,
                    need=("success",))
    if not isinstance(tested["success"], bool):
        fail(f"destinations.test: {tested!r}")
    if sdk.destinations.delete(PROJECT, made["id"]) is not None:
        fail("destinations.delete: no body expected")
    CHECKS.append("destinations.delete")
    after = sdk.destinations.list(PROJECT)
    if [d["id"] for d in after] != [d["id"] for d in before]:
        fail(f"destinations.delete: {after!r}")

    # ── refusals, as the SDK's errors ─────────────────────────────────
    raises("sessions.get (unknown session)", NotFoundError, lambda: sdk.sessions.get("sess_unknown"))
    wrong = apertur.Apertur(api_key="not-the-token", base_url=base, signing_secret=SECRET)
    raises("a wrong token", AuthenticationError, lambda: wrong.sessions.recent())
    unsigned = apertur.Apertur(api_key=token, base_url=base, signing_secret="another-secret")
    raises("a wrong signature", AuthenticationError, lambda: unsigned.sessions.list())
    raises("sessions.create (a bad limit)", ValidationError, lambda: sdk.sessions.create(expires_in_hours=500))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: apertur_sdk.py PATH/TO/upload")
    started = time.monotonic()
    proc, base, token = start_emulator(sys.argv[1])
    try:
        run(base, token)
    except AssertionError as e:
        print(f"apertur-sdk: the emulator differs from apertur-sdk 0.2.0: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    # `--apertur-delivery-shape sdk`: the SDK's shape without pollFrom too.
    proc, base, token = start_emulator(sys.argv[1], "--apertur-delivery-shape", "sdk")
    try:
        sdk = apertur.Apertur(api_key=token, base_url=base, signing_secret=SECRET)
        s = sdk.sessions.create()
        sdk.upload.image(s["id"], image(7, 777), filename="seven.jpg")
        st = judged("sessions.delivery_status (--apertur-delivery-shape sdk)", sdk.sessions.delivery_status(s["id"]),
                    T.DeliveryStatusResponse)
        if len(st["files"]) != 1 or st["files"][0]["size_bytes"] != 777:
            fail(f"sessions.delivery_status (--apertur-delivery-shape sdk): {st!r}")
    except AssertionError as e:
        print(f"apertur-sdk: the emulator differs from apertur-sdk 0.2.0: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(f"apertur-sdk: {len(CHECKS)} checks against the emulator passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
