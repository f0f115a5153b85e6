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

fn state_dir(args: &PendingArgs) -> Result<PathBuf> {
    let config = crate::cli::config::ConfigFile::load()?;
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
pub(crate) async fn run(args: PendingArgs, output: &OutputArgs, net: &NetOptions) -> Result<i32> {
    let dir = state_dir(&args)?;
    if args.resume {
        return resume(&args, &dir, output, net).await;
    }
    if !args.discard.is_empty() || args.all_older_than.is_some() {
        return discard(&args, &dir, output, net).await;
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
        for p in &pending {
            let d = &p.data;
            let total = if d.plan.num_parts > 0 { d.plan.num_parts.to_string() } else { "?".into() };
            let done: u64 = d.parts.iter().map(|p| p.size).sum();
            write_line(&format!(
                "{}  {}  {}  {}  parts {}/{total}  {} of {}  started {}  last activity {}  {}",
                p.id,
                d.provider,
                d.file.path.display(),
                if d.upload_id.is_empty() { "(not created)" } else { &d.upload_id },
                d.parts.len(),
                crate::size::human(done),
                crate::size::human(d.file.size),
                d.started_at,
                p.last_activity.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default(),
                match &p.mismatch {
                    None => "file matches".to_string(),
                    Some(why) => format!("FILE CHANGED: {why}"),
                }
            ))?;
        }
    }
    Ok(if bad.is_empty() { exit::OK } else { exit::USAGE })
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
        argv.extend(kept.iter().filter_map(|a| a.as_str()).map(Into::into));
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
                // Ctrl-C, or the time limit (`--until`, `--max-duration`): the others wait too.
                if matches!(e, Error::Interrupted { .. } | Error::Stopped { .. }) {
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

async fn discard(args: &PendingArgs, dir: &Path, output: &OutputArgs, net: &NetOptions) -> Result<i32> {
    let (pending, _) = load_all(dir);
    let now = chrono::Utc::now();
    let mut chosen: Vec<&Pending> = vec![];
    for id in &args.discard {
        let found: Vec<&Pending> = pending.iter().filter(|p| &p.id == id || &p.data.upload_id == id).collect();
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
    for p in chosen {
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
        .await?;
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
            let api = crate::cli::settings::api_from_args(provider, &api_args, net)?;
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
    Ok(exit::OK)
}

/// Whether discarding cleans up on the server: a Teleport capture that exists.
fn cleans_up(p: &Pending) -> bool {
    p.data.provider == "teleport" && !p.data.upload_id.is_empty() && p.data.state != JournalState::Completed
}
