//! The admin API on the API port, without auth:
//!
//! * `GET /_emulator/uploads` → every completed object ([`crate::ObjectInfo`] list; computes
//!   missing SHA-256 sums first); `DELETE /_emulator/uploads` drops them all (frees memory
//!   between benchmark runs);
//! * `POST /_emulator/presign-put?key=K` → `{"url": …}`, a presigned PutObject URL for key
//!   `K` in the bucket (a single `PUT` of a whole file, e.g. with `curl -T`);
//! * `GET /_emulator/faults` → the faults in force; `PUT /_emulator/faults` with a
//!   [`crate::Faults`] JSON (missing fields take their defaults) replaces them;
//! * `GET /_emulator/requests` → the request log ([`crate::RequestRecord`] list);
//! * `GET /_emulator/part-counts` → `[{upload_id, part, puts}]`, successful PUTs per part;
//! * `GET /_emulator/received?window_ms=1000` → `{"window_ms", "total", "span_s", "bytes": [...]}`:
//!   request body bytes received per window from the first byte on, and the seconds from the
//!   first byte to the last ([`crate::meter`]), of both servers or (`&server=s3`) of the S3
//!   store only;
//!   `DELETE /_emulator/received` starts a new measurement;
//! * `GET /_emulator/in-flight` → `{"api": {"now", "peak"}, "s3": {"now", "peak"}}`: requests
//!   being handled by each server now and the most at once (see [`crate::meter::InFlight`]);
//!   `DELETE /_emulator/in-flight` restarts the peaks from now;
//! * `GET /_emulator/teleport/captures` → every capture with its internal fields;
//! * `GET /_emulator/truvideo/uploads` → every TruVideo upload with its internal fields.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use crate::Faults;
use crate::fastapi::{detail, json_response};
use crate::state::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_emulator/uploads", get(uploads).delete(delete_uploads))
        .route("/_emulator/presign-put", axum::routing::post(presign_put))
        .route("/_emulator/faults", get(get_faults).put(put_faults))
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/part-counts", get(part_counts))
        .route("/_emulator/received", get(received).delete(clear_received))
        .route("/_emulator/in-flight", get(in_flight).delete(reset_in_flight))
        .route("/_emulator/teleport/captures", get(captures))
        .route("/_emulator/truvideo/uploads", get(truvideo_uploads))
        .with_state(shared)
}

async fn uploads(State(shared): State<Arc<Shared>>) -> Response {
    let objects = tokio::task::spawn_blocking(move || shared.store.objects()).await.unwrap_or_default();
    json_response(200, &json!(objects))
}

async fn delete_uploads(State(shared): State<Arc<Shared>>) -> Response {
    let keys: Vec<String> = shared.store.objects_keys();
    for k in &keys {
        shared.store.delete_object(k);
    }
    json_response(200, &json!({ "deleted": keys.len() }))
}

async fn presign_put(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    match q.get("key").filter(|k| !k.is_empty()) {
        Some(key) => json_response(200, &json!({ "url": shared.store.presign_put_object(key, "s3", key) })),
        None => detail(422, "query parameter 'key' is required"),
    }
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    let f = shared.faults.lock().unwrap().faults().clone();
    json_response(200, &json!(f))
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            shared.faults.lock().unwrap().set(f.clone());
            json_response(200, &json!(f))
        }
        Err(e) => detail(400, &format!("invalid faults: {e}")),
    }
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    let log = shared.log.lock().unwrap().clone();
    json_response(200, &json!(log))
}

async fn part_counts(State(shared): State<Arc<Shared>>) -> Response {
    let counts: Vec<_> = shared
        .store
        .part_put_counts()
        .into_iter()
        .map(|((u, p), n)| json!({ "upload_id": u, "part": p, "puts": n }))
        .collect();
    json_response(200, &json!(counts))
}

async fn captures(State(shared): State<Arc<Shared>>) -> Response {
    json_response(200, &crate::teleport::captures_summary(&shared))
}

async fn truvideo_uploads(State(shared): State<Arc<Shared>>) -> Response {
    json_response(200, &crate::truvideo::uploads_summary(&shared))
}

async fn received(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let window_ms = match q.get("window_ms").map(|v| v.parse::<u64>()) {
        None => 1000,
        Some(Ok(ms)) if ms > 0 => ms,
        Some(_) => return detail(422, "window_ms must be a positive integer"),
    };
    let meter = match q.get("server").map(String::as_str) {
        None | Some("all") => &shared.received,
        Some("s3") => &shared.received_s3,
        Some(_) => return detail(422, "server must be all or s3"),
    };
    let bytes = meter.per_window(std::time::Duration::from_millis(window_ms));
    json_response(
        200,
        &json!({
            "window_ms": window_ms,
            "total": meter.total(),
            "span_s": meter.span().as_secs_f64(),
            "bytes": bytes,
        }),
    )
}

async fn clear_received(State(shared): State<Arc<Shared>>) -> Response {
    shared.received.clear();
    shared.received_s3.clear();
    json_response(200, &json!({ "cleared": true }))
}

async fn in_flight(State(shared): State<Arc<Shared>>) -> Response {
    let g = |m: &crate::meter::InFlight| json!({ "now": m.now(), "peak": m.peak() });
    json_response(200, &json!({ "api": g(&shared.in_flight_api), "s3": g(&shared.in_flight_s3) }))
}

async fn reset_in_flight(State(shared): State<Arc<Shared>>) -> Response {
    shared.in_flight_api.reset_peak();
    shared.in_flight_s3.reset_peak();
    json_response(200, &json!({ "reset": true }))
}
