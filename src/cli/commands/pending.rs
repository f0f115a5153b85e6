//! `upload pending`: the uploads that have a resume journal in the state directory; resume
//! them all (`--resume`, as rerunning each original command would: the journal keeps the
//! command's options, never a secret) or discard some (`--discard ID`, `--all-older-than AGE`),
//! cleaning up on the server where the provider allows it.
//!
//! What each provider can clean up on `--discard`:
//! - Teleport: the capture is deleted (`DELETE /api/v1/captures/{eid}`), after a prompt on a
//!   terminal or with `--yes`;
//! - TruVideo: nothing (the API documents no way to abort or delete an upload); only the journal
//!   goes, and the server's upload is left to expire;
//! - Uplift and Apertur keep no journal (one request per file or image).
//!
//! Expiry: Teleport and TruVideo both hand out fresh part URLs for an existing upload (the tool
//! asks for them on resume), so an old journal resumes whatever its presigned URLs' lifetime;
//! neither documents a lifetime of the upload itself. A journal whose upload the server no
//! longer has fails on resume with the provider's answer.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::args::{OutputArgs, PendingArgs, ProviderName};
use crate::cli::report::exit;
use crate::engine::http::NetOptions;
use crate::engine::journal::{self, FileIdentity, JournalData, JournalState};
use crate::engine::source::FileSource;
use crate::error::{Error, Result};

/// One journal of the state directory.
struct Pending {
    /// The journal's file name without `.json` (an id for `--discard`).
    id: String,
    path: PathBuf,
    data: JournalData,
    /// When the journal was last written.
    last_activity: Option<chrono::DateTime<chrono::Utc>>,
    /// `None`: the file is as it was; else why it does not match.
    mismatch: Option<String>,
}

impl Pending {
    fn json(&self) -> serde_json::Value {
        let d = &self.data;
        serde_json::json!({
            "id": self.id,
            "provider": d.provider,
            "file": d.file.path.display().to_string(),
            "upload_id": (!d.upload_id.is_empty()).then_some(&d.upload_id),
            "state": d.state,
            "endpoint": d.endpoint,
            "parts_done": d.parts.len(),
            "parts_total": (d.plan.num_parts > 0).then_some(d.plan.num_parts),
            "bytes_done": d.parts.iter().map(|p| p.size).sum::<u64>(),
            "bytes_total": d.file.size,
            "started_at": d.started_at,
            "last_activity": self.last_activity.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "file_matches": self.mismatch.is_none(),
            "mismatch": self.mismatch,
            "expired": serde_json::Value::Null,
            "options": d.options,
        })
    }
}

fn mismatch(identity: &FileIdentity) -> Option<String> {
    let file = match FileSource::open(&identity.path) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot open the file: {e}")),
    };
    match FileIdentity::of(&file) {
        Ok(now) if now.same_file(identity) => None,
        Ok(now) if now.size != identity.size => Some(format!("size {} now, {} then", now.size, identity.size)),
        Ok(_) => Some("the file changed (modification time or content)".into()),
        Err(e) => Some(format!("cannot read the file: {e}")),
    }
}

fn load_all(state_dir: &Path) -> (Vec<Pending>, Vec<(PathBuf, Error)>) {
    let mut ok = vec![];
    let mut bad = vec![];
    for (path, data) in journal::list(state_dir) {
        let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        match data {
            Ok(data) => {
                let last_activity =
                    std::fs::metadata(&path).and_then(|m| m.modified()).ok().map(chrono::DateTime::<chrono::Utc>::from);
                let mismatch = mismatch(&data.file);
                ok.push(Pending { id, path, data, last_activity, mismatch });
            }
            Err(e) => bad.push((path, e)),
        }
    }
    (ok, bad)
}

fn state_dir(args: &PendingArgs, config: &crate::cli::config::ConfigFile) -> Result<PathBuf> {
    args.state_dir
        .clone()
        .or_else(|| config.defaults.state_dir.clone())
        .or_else(crate::cli::settings::default_state_dir)
        .ok_or_else(crate::cli::dirs::no_state_dir)
}

fn provider_of(name: &str) -> Result<ProviderName> {
    use clap::ValueEnum;
    ProviderName::from_str(name, true)
        .map_err(|_| Error::usage(format!("a journal names an unknown provider '{name}'"), "discard it with --discard"))
}

fn write_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    crate::cli::ignore_broken_pipe(writeln!(out, "{line}"))
}

/// Runs `upload pending`; returns the exit code.
pub(crate) async fn run(args: PendingArgs, output: &OutputArgs, inv: &crate::cli::settings::Invocation) -> Result<i32> {
    let net = &inv.net;
    let dir = state_dir(&args, &inv.config)?;
    // A state directory that is a file (or unreadable) is no "no pending uploads".
    match std::fs::metadata(&dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::usage(
                format!("the state directory {} is not a directory", dir.display()),
                "point --state-dir (or UPLOAD_STATE_DIR) at the directory the uploads used",
            ));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::usage(
                format!("cannot read the state directory {}: {e}", dir.display()),
                "point --state-dir (or UPLOAD_STATE_DIR) at the directory the uploads used",
            ));
        }
        _ => {}
    }
    match std::fs::metadata(dir.join("journals")) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::usage(
                format!("{} is not a directory", dir.join("journals").display()),
                "point --state-dir (or UPLOAD_STATE_DIR) at the directory the uploads used",
            ));
        }
        Ok(_) => {
            if let Err(e) = std::fs::read_dir(dir.join("journals")) {
                return Err(Error::usage(
                    format!("cannot read the journals in {}: {e}", dir.display()),
                    "check the permissions of the state directory (--state-dir, UPLOAD_STATE_DIR)",
                ));
            }
        }
        Err(_) => {}
    }
    if args.resume {
        return resume(&args, &dir, output, net).await;
    }
    if !args.discard.is_empty() || args.all_older_than.is_some() {
        return discard(&args, &dir, output, inv).await;
    }
    let (pending, bad) = load_all(&dir);
    for (path, e) in &bad {
        if output.json {
            write_line(
                &serde_json::json!({ "journal": path.display().to_string(), "error": e.to_string() }).to_string(),
            )?;
        } else {
            eprintln!("upload: {}: {e}", path.display());
        }
    }
    if output.json {
        for p in &pending {
            write_line(&p.json().to_string())?;
        }
    } else if pending.is_empty() {
        if !output.quiet {
            eprintln!("upload: no pending uploads in {}", dir.display());
        }
    } else {
        for line in table(&pending, TABLE_WIDTH) {
            write_line(&line)?;
        }
    }
    Ok(if bad.is_empty() { exit::OK } else { exit::USAGE })
}

/// The width the table of `upload pending` fits in.
const TABLE_WIDTH: usize = 100;

/// How long ago, for people: `45s ago`, `12m ago`, `5h ago`, `3d ago` (`--json` has the time).
fn ago(t: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// `done` of `total` bytes, in the unit of `total`: `1.22/57.22 MiB`.
fn sent_of(done: u64, total: u64) -> String {
    let t = crate::size::human(total);
    let Some((number, unit)) = t.split_once(' ') else { return t };
    let scale = match unit {
        "KiB" => 1u64 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return format!("{done}/{number} B"),
    };
    format!("{:.2}/{number} {unit}", done as f64 / scale as f64)
}

/// The shortest prefix of each id (at least `provider-` and 8 characters) that no other id of
/// the list shares: what the table shows, and what `--discard` takes.
fn short_ids(ids: &[&str]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            let min = id.find('-').map_or(0, |i| i + 1) + 8;
            let mut n = min.min(id.len());
            while n < id.len() && ids.iter().any(|o| o != id && o.starts_with(&id[..n])) {
                n += 1;
            }
            id[..n].to_string()
        })
        .collect()
}

/// The table of pending uploads, a header first, each line at most `width` characters (the
/// file's directory is shortened before its name): ID, UPLOAD (the provider's id, long ones
/// cut: `--json` has them whole), PARTS, SENT, LAST ACTIVE (how long ago), FILE; a file that changed since
/// gets a second line saying how.
fn table(pending: &[Pending], width: usize) -> Vec<String> {
    let ids: Vec<&str> = pending.iter().map(|p| p.id.as_str()).collect();
    let short = short_ids(&ids);
    let now = chrono::Utc::now();
    let rows: Vec<[String; 6]> = pending
        .iter()
        .zip(short)
        .map(|(p, id)| {
            let d = &p.data;
            let total = if d.plan.num_parts > 0 { d.plan.num_parts.to_string() } else { "?".into() };
            let done: u64 = d.parts.iter().map(|p| p.size).sum();
            let upload = match d.upload_id.as_str() {
                "" => "-".to_string(),
                u if u.chars().count() <= 12 => u.to_string(),
                u => format!("{}…", u.chars().take(8).collect::<String>()),
            };
            [
                id,
                upload,
                format!("{}/{total}", d.parts.len()),
                sent_of(done, d.file.size),
                p.last_activity.map(|t| ago(t, now)).unwrap_or_else(|| "-".into()),
                d.file.path.display().to_string(),
            ]
        })
        .collect();
    let header = ["ID", "UPLOAD", "PARTS", "SENT", "LAST ACTIVE", "FILE"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let before_file: usize = widths[..5].iter().map(|w| w + 2).sum();
    let file_w = width.saturating_sub(before_file).max(24);
    let mut lines = vec![];
    for (r, p) in std::iter::once((&header, None)).chain(rows.iter().zip(pending.iter().map(Some))) {
        let mut line = String::new();
        for (i, cell) in r[..5].iter().enumerate() {
            line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
        }
        line.push_str(&crate::cli::ui::shorten_path(&r[5], file_w));
        lines.push(line.trim_end().to_string());
        if let Some(why) = p.and_then(|p| p.mismatch.as_ref()) {
            let note = format!("  not resumable: {why} (upload pending --discard {} drops it)", r[0]);
            lines.push(crate::cli::ui::truncate_middle(&note, width));
        }
    }
    lines
}

/// The command line that carries an upload on: the file, provider and endpoint of the journal,
/// the options it kept, and this run's token sources and state directory.
fn resume_command(
    p: &Pending,
    args: &PendingArgs,
    dir: &Path,
    output: &OutputArgs,
    net: &NetOptions,
) -> Result<crate::cli::args::Cli> {
    let d = &p.data;
    let mut argv: Vec<std::ffi::OsString> = vec!["upload".into(), d.file.path.clone().into_os_string()];
    for a in ["--provider", &d.provider, "--endpoint", &d.endpoint] {
        argv.push(a.into());
    }
    if let Some(kept) = d.options.get("args").and_then(|a| a.as_array()) {
        let mut kept = kept.iter().filter_map(|a| a.as_str());
        while let Some(a) = kept.next() {
            // This command's `--limit-rate` (or UPLOAD_LIMIT_RATE) wins over the journal's.
            if a == "--limit-rate" && args.limit_rate.is_some() {
                kept.next();
                continue;
            }
            argv.push(a.into());
        }
    }
    argv.push("--state-dir".into());
    argv.push(dir.as_os_str().to_owned());
    let mut flag = |name: &str, value: Option<&str>| {
        if let Some(v) = value {
            argv.push(name.into());
            argv.push(v.into());
        }
    };
    flag("--token", args.tokens.token.as_ref().map(|t| t.expose()));
    flag("--token-command", args.tokens.token_command.as_deref());
    flag("--limit-rate", args.limit_rate.as_deref());
    // The resumed run sets its clients up again: keep this run's time model (from its flags,
    // env or config file).
    let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
    flag("--connect-timeout", Some(&ms(net.connect_timeout)));
    flag("--idle-timeout", Some(&ms(net.idle_timeout)));
    if let Some(s) = net.speed_limit {
        flag("--speed-limit", Some(&s.bytes_per_second.to_string()));
        flag("--speed-time", Some(&ms(s.time)));
    }
    let s = &args.sign_in;
    flag("--client-id", s.client_id.as_deref());
    flag("--client-secret", s.client_secret.as_ref().map(|t| t.expose()));
    flag("--api-key", s.api_key.as_ref().map(|t| t.expose()));
    flag("--secret-key", s.secret_key.as_ref().map(|t| t.expose()));
    flag("--external-id", s.external_id.as_deref());
    flag("--auth-endpoint", s.auth_endpoint.as_deref());
    // And the CA bundle it trusts (`--ca-bundle`; the env var reaches the resumed run itself).
    if let Some(ca) = &net.ca_bundle {
        argv.push("--ca-bundle".into());
        argv.push(ca.clone().into_os_string());
    }
    if output.json {
        argv.push("--json".into());
    }
    if output.quiet {
        argv.push("-q".into());
    }
    <crate::cli::args::Cli as clap::Parser>::try_parse_from(argv).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        Error::usage(
            format!("the journal {} does not give a usable command: {first}", p.id),
            "discard it with upload pending --discard ID and upload the file again",
        )
    })
}

async fn resume(args: &PendingArgs, dir: &Path, output: &OutputArgs, net: &NetOptions) -> Result<i32> {
    let (pending, bad) = load_all(dir);
    let mut code = if bad.is_empty() { exit::OK } else { exit::USAGE };
    for (path, e) in &bad {
        eprintln!("upload: {}: {e}", path.display());
    }
    if pending.is_empty() && !output.quiet {
        eprintln!("upload: no pending uploads in {}", dir.display());
    }
    for p in pending {
        if let Some(why) = &p.mismatch {
            let err = Error::JournalMismatch {
                path: p.data.file.path.clone(),
                message: format!(
                    "{} changed since its upload was interrupted ({why}); not resumed",
                    p.data.file.path.display()
                ),
                hint: format!(
                    "upload it again with --no-resume, or drop the journal with upload pending --discard {}",
                    p.id
                ),
            };
            crate::cli::report_error(&err);
            code = code.max(crate::cli::report::exit_code(&err));
            continue;
        }
        if !output.quiet {
            eprintln!(
                "upload: resuming {} ({}, {} of {} parts done)",
                p.data.file.path.display(),
                p.data.provider,
                p.data.parts.len(),
                p.data.plan.num_parts
            );
        }
        let outcome = match resume_command(&p, args, dir, output, net) {
            Ok(cli) => Box::pin(crate::cli::run(cli)).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(c) => code = code.max(c),
            Err(e) => {
                crate::cli::report_error(&e);
                code = code.max(crate::cli::report::exit_code(&e));
                if matches!(e, Error::Interrupted { .. }) {
                    break;
                }
            }
        }
    }
    Ok(code)
}

/// Asks on the terminal; off a terminal, `--yes` is required.
fn confirm(question: &str) -> Result<bool> {
    use std::io::IsTerminal;
    let tty = std::io::stdin().is_terminal() || std::env::var("UPLOAD_FORCE_TTY").is_ok_and(|v| v == "1");
    if !tty {
        return Err(Error::usage(
            "discarding needs confirmation, and stdin is not a terminal",
            "pass --yes to discard without asking",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Error::File { path: "<stdin>".into(), source: e })?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

async fn discard(
    args: &PendingArgs,
    dir: &Path,
    output: &OutputArgs,
    inv: &crate::cli::settings::Invocation,
) -> Result<i32> {
    let (pending, _) = load_all(dir);
    let now = chrono::Utc::now();
    let mut chosen: Vec<&Pending> = vec![];
    for id in &args.discard {
        let exact: Vec<&Pending> = pending.iter().filter(|p| &p.id == id || &p.data.upload_id == id).collect();
        // Else a prefix (the table shows short ids), when it names one upload only.
        let found = if exact.is_empty() && id.len() >= 4 {
            let by_prefix: Vec<&Pending> = pending
                .iter()
                .filter(|p| {
                    p.id.starts_with(id.as_str())
                        || (!p.data.upload_id.is_empty() && p.data.upload_id.starts_with(id.as_str()))
                })
                .collect();
            if by_prefix.len() > 1 {
                return Err(Error::usage(
                    format!("{id} names {} pending uploads", by_prefix.len()),
                    "give more of the id (`upload pending --json` shows them whole)",
                ));
            }
            by_prefix
        } else {
            exact
        };
        if found.is_empty() {
            return Err(Error::usage(
                format!("no pending upload {id} in {}", dir.display()),
                "`upload pending` lists them (the first column, or the provider's id)",
            ));
        }
        chosen.extend(found);
    }
    if let Some(age) = args.all_older_than {
        let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        chosen.extend(pending.iter().filter(|p| p.last_activity.is_some_and(|t| now - t > age)));
    }
    chosen.sort_by(|a, b| a.id.cmp(&b.id));
    chosen.dedup_by(|a, b| a.id == b.id);
    if chosen.is_empty() {
        if !output.quiet {
            eprintln!("upload: nothing to discard");
        }
        return Ok(exit::OK);
    }
    let server_side = chosen.iter().filter(|p| cleans_up(p)).count();
    if !args.yes {
        let question = format!(
            "discard {} pending upload(s){}?",
            chosen.len(),
            if server_side > 0 { format!(", deleting {server_side} on the server") } else { String::new() }
        );
        if !confirm(&question)? {
            eprintln!("upload: nothing discarded");
            return Ok(exit::OK);
        }
    }
    let mut code = exit::OK;
    for p in chosen {
        match discard_one(args, dir, output, inv, p).await {
            Ok(()) => {}
            // One that cannot be discarded (its upload is running, the server refused) is
            // reported; the others are discarded all the same.
            Err(e) => {
                crate::cli::report_error(&e);
                code = code.max(crate::cli::report::exit_code(&e));
            }
        }
    }
    Ok(code)
}

async fn discard_one(
    args: &PendingArgs,
    dir: &Path,
    output: &OutputArgs,
    inv: &crate::cli::settings::Invocation,
    p: &Pending,
) -> Result<()> {
    {
        let provider = provider_of(&p.data.provider)?;
        // An upload still running holds its journal's lock: it is not pulled from under it
        // (exit 8, nothing deleted).
        let _lock = journal::lock(
            dir,
            &p.data.provider,
            &p.data.endpoint,
            &p.data.file.path,
            None,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .map_err(|e| match e {
            Error::Busy { message, .. } => Error::Busy {
                message: format!("{} not discarded: {message}", p.id),
                hint: "let it finish or stop it, then discard it".into(),
            },
            e => e,
        })?;
        let mut server = "none: the provider offers no clean-up".to_string();
        if cleans_up(p) {
            let api_args = crate::cli::args::ApiArgs {
                tokens: args.tokens.clone(),
                endpoint: Some(p.data.endpoint.clone()),
                retries: 10,
                sign_in: Box::new(crate::cli::args::ApiSignInArgs {
                    state_dir: Some(dir.to_path_buf()),
                    credentials: args.sign_in.clone(),
                }),
            };
            let api = crate::cli::settings::api_from_args(provider, &api_args, inv)?;
            match crate::providers::teleport::admin::delete(&api, &p.data.upload_id).await {
                Ok(()) => server = format!("capture {} deleted", p.data.upload_id),
                Err(Error::Rejected { status: 404, .. }) => {
                    server = format!("capture {} was already gone", p.data.upload_id)
                }
                Err(e) => return Err(e),
            }
        }
        journal::remove(dir, &p.data.provider, &p.data.endpoint, &p.data.file.path);
        let _ = std::fs::remove_file(&p.path);
        if output.json {
            write_line(
                &serde_json::json!({
                    "id": p.id, "provider": p.data.provider, "upload_id": p.data.upload_id,
                    "file": p.data.file.path.display().to_string(), "discarded": true, "server": server,
                })
                .to_string(),
            )?;
        } else {
            write_line(&format!("discarded {} ({} {}): server: {server}", p.id, p.data.provider, p.data.upload_id))?;
        }
    }
    Ok(())
}

/// Whether discarding cleans up on the server: a Teleport capture that exists.
fn cleans_up(p: &Pending) -> bool {
    p.data.provider == "teleport" && !p.data.upload_id.is_empty() && p.data.state != JournalState::Completed
}
