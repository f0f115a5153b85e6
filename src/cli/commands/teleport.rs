//! `upload teleport list|status|rename|delete|metadata|download`: what people and scripts see.
//! The API calls are in [`crate::providers::teleport::admin`].

use std::io::{IsTerminal, Write};
use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::cli::args::{ModelArgs, OutputArgs, ProviderName, TeleportCommand};
use crate::cli::settings::api_from_args;
use crate::cli::ui;
use crate::engine::download::{DownloadRequest, download};
use crate::error::{Error, Result};
use crate::providers::teleport::admin::{self as admin, Capture, MetadataQuery};
use crate::redact::safe_url;

/// Runs one `upload teleport ...` command; returns the exit code.
pub(crate) async fn run(
    cmd: TeleportCommand,
    output: &OutputArgs,
    inv: &crate::cli::settings::Invocation,
) -> Result<i32> {
    let json = output.json;
    let mut stdout = std::io::stdout();
    match cmd {
        TeleportCommand::List { limit, offset, all, api } => {
            let api = api_from_args(ProviderName::Teleport, &api, inv)?;
            list(&api, limit, offset as u64, all, json).await?;
        }
        TeleportCommand::Status { eid, api } => {
            admin::check_id("capture eid", &eid)?;
            let api = api_from_args(ProviderName::Teleport, &api, inv)?;
            let c = admin::status(&api, &eid).await?;
            print_capture(&mut stdout, &c, json)?;
        }
        TeleportCommand::Rename { eid, name, api } => {
            admin::check_id("capture eid", &eid)?;
            let api = api_from_args(ProviderName::Teleport, &api, inv)?;
            let c = admin::rename(&api, &eid, &name).await?;
            print_capture(&mut stdout, &c, json)?;
        }
        TeleportCommand::Delete { eid, yes, api } => {
            admin::check_id("capture eid", &eid)?;
            let api = api_from_args(ProviderName::Teleport, &api, inv)?;
            return delete(&api, &eid, yes, json).await;
        }
        TeleportCommand::Metadata { sid, model, api } => {
            admin::check_id("share id (sid)", &sid)?;
            let api = api_from_args(ProviderName::Teleport, &api, inv)?;
            let meta = admin::metadata(&api, &sid, &query(&model)).await?;
            if json {
                print_json_line(&mut stdout, &meta)?;
            } else {
                let text = serde_json::to_string_pretty(&meta).unwrap_or_default();
                out(writeln!(stdout, "{text}"))?;
            }
        }
        TeleportCommand::Download { sid, model, output: dir, rate, api } => {
            admin::check_id("share id (sid)", &sid)?;
            let rate = crate::cli::settings::rate_limit(rate.limit_rate.as_deref(), &inv.config)?;
            let cancel = CancellationToken::new();
            crate::cli::install_ctrl_c(cancel.clone());
            let api = api_from_args(ProviderName::Teleport, &api, inv)?
                .with_executor(crate::cli::settings::run_executor(cancel.clone(), output.quiet, &inv.net));
            download_models(&api, &sid, &model, &dir, &rate, output).await?;
        }
    }
    Ok(crate::cli::report::exit::OK)
}

/// `upload teleport list`: one page (`--limit` from `--offset`), or with `--all` every page
/// until a short one; a table, or JSON lines that go out page by page (a long listing streams).
async fn list(api: &crate::providers::api::Api, limit: u32, offset: u64, all: bool, json: bool) -> Result<()> {
    let mut stdout = std::io::stdout();
    let mut captures = Vec::new();
    if all {
        admin::list_all(api, limit, offset, |page| {
            if json {
                // Lines go out page by page: a long listing streams.
                for c in page {
                    print_json_line(&mut stdout, &c.to_json())?;
                }
            } else {
                captures.extend_from_slice(page);
            }
            Ok(())
        })
        .await?;
    } else {
        let page = admin::list_page(api, limit, offset).await?;
        if json {
            for c in &page {
                print_json_line(&mut stdout, &c.to_json())?;
            }
        } else {
            captures = page;
        }
    }
    if !json {
        out(print_table(&mut stdout, &captures))?;
    }
    Ok(())
}

/// `upload teleport delete EID`: asks first on a terminal unless `--yes`; a capture already
/// gone is what was asked for (exit 0, said so; `already_gone` in JSON).
async fn delete(api: &crate::providers::api::Api, eid: &str, yes: bool, json: bool) -> Result<i32> {
    let mut stdout = std::io::stdout();
    let gone = |stdout: &mut std::io::Stdout| -> Result<i32> {
        // Deleting is idempotent: a capture already gone is what was asked for.
        if json {
            print_json_line(stdout, &serde_json::json!({ "eid": eid, "deleted": true, "already_gone": true }))?;
        } else {
            eprintln!("upload: capture {eid} does not exist (already deleted?): nothing to delete");
        }
        Ok(crate::cli::report::exit::OK)
    };
    if !yes {
        match confirm_delete(api, eid).await? {
            Confirm::Yes => {}
            Confirm::No => {
                eprintln!("upload: capture {eid} kept");
                return Ok(crate::cli::report::exit::OK);
            }
            Confirm::Gone => return gone(&mut stdout),
        }
    }
    match admin::delete(api, eid).await {
        Err(Error::Rejected { status: 404, .. }) => return gone(&mut stdout),
        r => r?,
    }
    if json {
        print_json_line(&mut stdout, &serde_json::json!({ "eid": eid, "deleted": true }))?;
    } else {
        out(writeln!(stdout, "deleted capture {eid}"))?;
    }
    Ok(crate::cli::report::exit::OK)
}

fn query(model: &ModelArgs) -> MetadataQuery {
    MetadataQuery {
        profile: model.profile.clone(),
        quality: model.quality.clone(),
        lod: model.lod,
        use_cdn: !model.no_cdn,
    }
}

async fn download_models(
    api: &crate::providers::Api,
    sid: &str,
    model: &ModelArgs,
    dir: &Path,
    rate: &crate::engine::ratelimit::RateLimit,
    output: &OutputArgs,
) -> Result<()> {
    let meta = admin::metadata(api, sid, &query(model)).await?;
    let models = admin::models(api, &meta)?;
    if models.is_empty() {
        return Err(Error::Protocol {
            provider: api.provider,
            what: "get metadata".into(),
            message: format!("no model file is listed for profile {} quality {}", model.profile, model.quality),
        });
    }
    // Every URL and name is checked before the first byte is written.
    let mut plan = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, m) in models.iter().enumerate() {
        let url = crate::engine::http::checked_url(&m.url, "models[].url").map_err(|_| Error::Protocol {
            provider: api.provider,
            what: "get metadata".into(),
            message: format!("model URL {} is not an https URL", safe_url(&m.url)),
        })?;
        let mut name = file_name(&url, i);
        if !names.insert(name.clone()) {
            name = format!("{i}-{name}");
            names.insert(name.clone());
        }
        plan.push((m, name));
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::File { path: dir.to_path_buf(), source })?;
    // The API's pool (the run's trust roots and connect timeout) serves the model host too.
    let http = api.http.clone();
    let mut stdout = std::io::stdout();
    for (m, name) in plan {
        let dest = dir.join(&name);
        let progress = ui::FileProgress::with_rate_limit(ui::Mode::detect(output.quiet, output.json), rate);
        let req = DownloadRequest {
            provider: api.provider,
            url: &m.url,
            dest: &dest,
            size: m.size,
            retry: api.retry.clone(),
            rate: rate.clone(),
        };
        let done = download(&http, &req, &progress, &api.exec).await?;
        drop(progress);
        if output.json {
            print_json_line(
                &mut stdout,
                &serde_json::json!({
                    "sid": sid,
                    "file": done.path.display().to_string(),
                    "url": safe_url(&m.url),
                    "bytes": done.bytes,
                    "sha256": done.sha256,
                    "resumed_from": done.resumed_from,
                    "skipped": done.skipped,
                }),
            )?;
        } else {
            let note = if done.skipped {
                " (already complete)".to_string()
            } else if done.resumed_from > 0 {
                format!(" (resumed at {})", crate::size::human(done.resumed_from))
            } else {
                String::new()
            };
            out(writeln!(
                stdout,
                "{}  {}  sha256 {}{note}",
                done.path.display(),
                crate::size::human(done.bytes),
                done.sha256
            ))?;
        }
    }
    Ok(())
}

/// The file name for a model: its URL's last path segment, reduced to `[A-Za-z0-9._-]`.
fn file_name(url: &url::Url, index: usize) -> String {
    let last = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or("");
    let clean: String =
        last.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.is_empty() { format!("model-{index}") } else { clean }
}

/// Asks on the terminal. Off a terminal (scripts) deleting needs `--yes`: nothing is asked and
/// nothing is sent. `UPLOAD_FORCE_TTY=1` makes stdin count as a terminal (tests).
async fn confirm_delete(api: &crate::providers::api::Api, eid: &str) -> Result<Confirm> {
    let tty = std::io::stdin().is_terminal() || std::env::var("UPLOAD_FORCE_TTY").is_ok_and(|v| v == "1");
    if !tty {
        return Err(Error::usage(
            format!("not deleting capture {eid} without confirmation: stdin is not a terminal"),
            "pass --yes to delete without being asked",
        ));
    }
    // The question names the capture (an eid alone says little), or there is none to ask.
    let name = match admin::status(api, eid).await {
        Ok(c) => c.fields.get("name").and_then(|n| n.as_str()).unwrap_or("no name").to_string(),
        Err(Error::Rejected { status: 404, .. }) => return Ok(Confirm::Gone),
        Err(e) => return Err(e),
    };
    eprint!("Delete capture {eid} ({name})? This cannot be undone. [y/N] ");
    let _ = std::io::stderr().flush();
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(|source| Error::File { path: "<stdin>".into(), source })?;
    let answer = line.trim().to_ascii_lowercase();
    if line.is_empty() {
        eprintln!();
    }
    Ok(if answer == "y" || answer == "yes" { Confirm::Yes } else { Confirm::No })
}

/// The answer to "Delete capture X?".
enum Confirm {
    Yes,
    No,
    /// No question asked: the capture does not exist.
    Gone,
}

fn out(r: std::io::Result<()>) -> Result<()> {
    crate::cli::ignore_broken_pipe(r)
}

fn print_json_line(w: &mut dyn Write, v: &serde_json::Value) -> Result<()> {
    out(serde_json::to_writer(&mut *w, v).map_err(std::io::Error::other).and_then(|_| writeln!(w)))
}

/// One capture: a JSON line, or `key: value` lines (nulls left out).
fn print_capture(w: &mut dyn Write, c: &Capture, json: bool) -> Result<()> {
    if json {
        return print_json_line(w, &c.to_json());
    }
    let v = c.to_json();
    let first = [
        "eid",
        "name",
        "state",
        "state_description",
        "error_reason",
        "error_reason_slug",
        "created",
        "uploaded",
        "sid",
        "viewer_url",
        "share_url",
    ];
    let obj = v.as_object().cloned().unwrap_or_default();
    let mut lines = Vec::new();
    for k in first {
        if let Some(x) = obj.get(k) {
            lines.push((k.to_string(), x.clone()));
        }
    }
    for (k, x) in &obj {
        if !first.contains(&k.as_str()) {
            lines.push((k.clone(), x.clone()));
        }
    }
    for (k, x) in lines {
        let text = match &x {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(m) if m.is_empty() => continue,
            other => other.to_string(),
        };
        out(writeln!(w, "{k}: {text}"))?;
    }
    Ok(())
}

/// The capture table: eid, name, state, created, uploaded, viewer_url.
fn print_table(w: &mut dyn Write, captures: &[Capture]) -> std::io::Result<()> {
    let time = |c: &Capture, k: &str| {
        c.str(k)
            .map(|t| admin::parse_time(t).map_or_else(|| t.to_string(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()))
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<[String; 6]> = captures
        .iter()
        .map(|c| {
            [
                c.eid.clone(),
                truncate(c.str("name").unwrap_or("-"), 40),
                c.state.clone(),
                time(c, "created"),
                time(c, "uploaded"),
                c.str("viewer_url").unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let header = ["EID", "NAME", "STATE", "CREATED", "UPLOADED", "VIEWER_URL"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(w, "{}", line.trim_end())?;
    }
    if rows.is_empty() {
        writeln!(w, "(no captures)")?;
    }
    w.flush()
}

fn truncate(s: &str, max: usize) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().count() > max { format!("{}…", s.chars().take(max - 1).collect::<String>()) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_urls() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(file_name(&u("https://cdn.example/a/b/ply-hd.ply?sig=x"), 0), "ply-hd.ply");
        assert_eq!(file_name(&u("https://cdn.example/a/..%2F..%2Fetc"), 0), "_2F.._2Fetc");
        assert_eq!(file_name(&u("https://cdn.example/"), 3), "model-3");
        assert_eq!(file_name(&u("https://cdn.example/.hidden"), 1), "hidden");
    }

    #[test]
    fn table_columns() {
        let c: Capture = serde_json::from_value(serde_json::json!({
            "eid": "abc", "state": "READY", "name": "Lobby", "created": "2025-10-06T18:55:42.733421",
            "uploaded": null, "viewer_url": "https://v/x"
        }))
        .unwrap();
        let mut buf = Vec::new();
        print_table(&mut buf, &[c]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("EID") && lines[0].ends_with("VIEWER_URL"), "{text}");
        assert!(lines[1].contains("2025-10-06 18:55:42Z") && lines[1].ends_with("https://v/x"), "{text}");
        assert!(lines[1].contains("  -  "), "{text}");
    }
}
