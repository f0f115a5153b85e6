//! What a terminal shows (the fake terminal of `UPLOAD_FORCE_TTY=1`, `COLUMNS` wide) and what
//! logs hold: resumes told, bars that fit the width, one line per finished file, a clean
//! Ctrl-C, the run's throughput, colour only where it belongs, plain log values.

use std::time::{Duration, Instant};

use crate::common::*;

fn tty(env: &[(String, String)], columns: usize) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("UPLOAD_FORCE_TTY".into(), "1".into()));
    env.push(("COLUMNS".into(), columns.to_string()));
    env
}

fn teleport(files: &[&std::path::Path], emu: &Emulator, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    a.extend(args(&["--provider", "teleport", "--endpoint", &emu.api_url()]));
    a.extend(args(extra));
    a
}

/// Whether `s` holds an SGR (colour) escape sequence: `ESC [ digits;... m`.
fn has_colour(s: &str) -> bool {
    s.match_indices("\x1b[").any(|(i, _)| {
        let rest = &s[i + 2..];
        let n = rest.chars().take_while(|c| c.is_ascii_digit() || *c == ';').count();
        rest[n..].starts_with('m')
    })
}

/// What the screen was sent, escape sequences taken out, cut at every `\r` and `\n`: the
/// frames of the board and the lines printed above it.
fn frames(s: &str) -> Vec<String> {
    let plain = console::strip_ansi_codes(s);
    plain.split(['\r', '\n']).map(|l| l.trim_end().to_string()).filter(|l| !l.is_empty()).collect()
}

/// The bar lines among the frames (`name [===>  ] 1.00 MiB/2.00 MiB ...`).
fn bar_frames(s: &str) -> Vec<String> {
    frames(s).into_iter().filter(|l| l.contains(" [") && l.contains("] ")).collect()
}

/// Every rate shown on the bars, in MiB/s.
fn rates(s: &str) -> Vec<f64> {
    let mut out = vec![];
    for line in bar_frames(s) {
        for (unit, scale) in [(" KiB/s", 1.0 / 1024.0), (" MiB/s", 1.0), (" GiB/s", 1024.0)] {
            for (i, _) in line.match_indices(unit) {
                let number: String = line[..i].chars().rev().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                let number: String = number.chars().rev().collect();
                if let Ok(v) = number.parse::<f64>() {
                    out.push(v * scale);
                }
            }
        }
    }
    out
}

/// Waits until the run's journal lists `parts` finished parts, then kills it (SIGKILL).
async fn kill_after_parts(state_home: &std::path::Path, parts: usize, mut child: std::process::Child) {
    let start = Instant::now();
    loop {
        if let Some(j) = journals(state_home).first()
            && j["parts"].as_array().unwrap().len() >= parts
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the upload ended ({status}) before {parts} parts were recorded");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_upload_is_told_on_a_terminal_and_its_rate_counts_this_run_only() {
    // 12 parts of 5 MiB, at most 8 MiB/s per connection, 2 connections.
    let faults = Faults { bandwidth_bps: 8 * MIB, ..Faults::default() };
    let emu = emulator(Config { faults, teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    for (name, on_a_terminal) in [("scan.zip", true), ("other.zip", false)] {
        let (path, sha) = make_file(dir.path(), name, 60 * MIB);
        let state = dir.path().join(format!("state-{name}"));
        let mut env = env.clone();
        env.push(("XDG_STATE_HOME".into(), state.display().to_string()));
        let a = teleport(&[&path], &emu, &["--concurrency", "2"]);
        kill_after_parts(&state, 6, spawn_upload(&a, &env)).await;

        let env = if on_a_terminal { tty(&env, 120) } else { env };
        let out = run_upload(a, env).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(emu.objects().iter().any(|o| o.sha256 == sha), "{name} stored whole");
        let err = stderr(&out);
        let told = format!("upload: {name}: resuming capture ");
        assert!(err.contains(&told) && err.contains("of 12 parts already sent"), "{name}: {err:?}");
        if on_a_terminal {
            // The resume is a line of its own above the bar, not a state the next one hides.
            assert!(frames(&err).iter().any(|l| l.starts_with(&told)), "{err:?}");
            // About 16 MiB/s can go through; the 30 MiB and more already on the server are
            // not this run's (the bug showed 782 MiB/s at the first reading).
            let rates = rates(&err);
            assert!(!rates.is_empty(), "no rate shown: {err:?}");
            assert!(rates.iter().all(|r| *r < 100.0), "rates in MiB/s: {rates:?}");
        } else {
            assert!(!err.contains("upload: : "), "a line without the file name: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_of_a_run_gives_its_throughput() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = make_file(dir.path(), "a.zip", MIB);
    let (b, _) = make_file(dir.path(), "b.zip", 2 * MIB);
    let out = run_upload(teleport(&[&a, &b], &emu, &[]), vec![("TELEPORT_TOKEN".into(), emu.token())]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err.lines().find(|l| l.starts_with("upload: 2 uploaded, 0 skipped, 0 failed; 3.00 MiB in ")).unwrap();
    let rate = line.rsplit_once(" s (").map(|(_, r)| r).unwrap_or_else(|| panic!("{line}"));
    assert!(rate.ends_with("/s)") && rate.chars().next().unwrap().is_ascii_digit(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_fit_the_terminal_width_and_long_names_are_cut_in_the_middle() {
    let faults = Faults { bandwidth_bps: 6 * MIB, ..Faults::default() };
    let emu = emulator(Config { faults, teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let long = "une-très-longue-prise-de-vue-de-l-atelier-été-2026-caméra-gauche.zip";
    let (a, _) = make_file(dir.path(), long, 10 * MIB);
    let (b, _) = make_file(dir.path(), "b.zip", 10 * MIB);
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    for columns in [80, 40] {
        let out = run_upload(teleport(&[&a, &b], &emu, &["--force"]), tty(&env, columns)).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        let bars = bar_frames(&err);
        assert!(bars.len() > 3, "{columns}: bars drawn: {err:?}");
        for line in &bars {
            assert!(line.chars().count() <= columns, "{columns}: a bar line wraps: {line:?}");
        }
        let cut: Vec<&String> = bars.iter().filter(|l| l.starts_with("une-tr") && l.contains('…')).collect();
        assert!(!cut.is_empty(), "{columns}: the long name cut in the middle: {bars:?}");
        let at = cut[0].find('…').unwrap();
        assert!(cut[0][at..].contains(".zip"), "the end of the name kept: {:?}", cut[0]);
        if columns == 40 {
            assert!(!bars.iter().any(|l| l.contains("ETA")), "no ETA at 40 columns: {bars:?}");
        }
        assert!(bars.iter().any(|l| l.starts_with("total ")), "{bars:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_terminal_is_asked_its_width() {
    // A pty of 50 columns (util-linux `script`); COLUMNS says 200 and is not believed.
    if std::process::Command::new("script").arg("--version").output().is_err() {
        panic!("util-linux `script` is needed to run the binary on a pty");
    }
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = make_file(dir.path(), "a.zip", 3 * MIB);
    let (b, _) = make_file(dir.path(), "b.zip", 3 * MIB);
    let mut line = format!("stty cols 50 rows 24 && exec '{}'", assert_cmd::cargo::cargo_bin("upload").display());
    for arg in teleport(&[&a, &b], &emu, &[]) {
        line.push_str(&format!(" '{arg}'"));
    }
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token()), ("COLUMNS".into(), "200".into())];
    let template = upload_command(&[], &env);
    let mut cmd = std::process::Command::new("script");
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args(["-qec", &line, "/dev/null"]).stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let screen = stdout(&out);
    assert!(out.status.success(), "{screen}");
    let bars = bar_frames(&screen);
    assert!(!bars.is_empty(), "bars drawn on the pty: {screen:?}");
    for l in &bars {
        assert!(l.chars().count() < 50, "{l:?}");
    }
    assert!(bars.iter().any(|l| l.starts_with("total  ")), "{bars:?}");
    assert!(screen.contains("upload: 2 uploaded, 0 skipped, 0 failed; 6.00 MiB in "), "{screen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_several_files_on_a_terminal_prints_one_line_per_file() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = ["a.zip", "b.zip", "c.zip"].iter().map(|n| make_file(dir.path(), n, MIB).0).collect();
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];

    let out = run_upload(teleport(&paths, &emu, &[]), tty(&env, 100)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let done: Vec<String> = frames(&err).into_iter().filter(|l| l.starts_with("✓ ")).collect();
    assert_eq!(done.len(), 3, "one line per file: {err:?}");
    for line in &done {
        assert!(
            line.contains("1.00 MiB") && line.contains("teleport capture ") && line.contains("(uploaded)"),
            "{line}"
        );
    }
    for name in ["a.zip", "b.zip", "c.zip"] {
        assert!(
            done.iter().any(|l| l.starts_with(&format!("✓ {}/{name}  ", dir.path().display()))),
            "{name}: {done:?}"
        );
    }
    assert!(!err.contains("  id: "), "no block per file: {err:?}");
    assert!(stdout(&out).is_empty(), "stdout is the terminal too: {}", stdout(&out));
    assert!(err.contains("upload: 3 uploaded, 0 skipped, 0 failed; 3.00 MiB in "), "{err:?}");

    // -v: the detail too.
    let out = run_upload(teleport(&paths, &emu, &["--force", "-v"]), tty(&env, 100)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("  id: ").count(), 3, "{}", stderr(&out));

    // -q on a terminal, and off a terminal: the blocks on stdout, as before.
    for (extra, env) in [(&["--force", "-q"][..], tty(&env, 100)), (&["--force"][..], env.clone())] {
        let out = run_upload(teleport(&paths, &emu, extra), env).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert_eq!(text.matches(" → teleport: uploaded (1.00 MiB, 1 part, ").count(), 3, "{extra:?}: {text}");
        assert_eq!(text.matches("  id: ").count(), 3, "{text}");
        assert!(!stderr(&out).contains("✓"), "{}", stderr(&out));
    }
}

/// Six files, one at a time, interrupted (SIGINT) while the second is on its way: f0.zip is
/// done (one file at a time: f1.zip's capture is created), f1.zip goes (two parts of 5 MiB at
/// 2 MiB/s each), f2.zip to f5.zip wait.
struct Interrupted {
    emu: Emulator,
    dir: tempfile::TempDir,
    files: Vec<std::path::PathBuf>,
    env: Vec<(String, String)>,
}

impl Interrupted {
    async fn new(on_a_terminal: bool) -> Self {
        let faults = Faults { bandwidth_bps: 2 * MIB, ..Faults::default() };
        let emu = emulator(Config { faults, teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
        let dir = tempfile::tempdir().unwrap();
        let mut files = vec![make_file(dir.path(), "f0.zip", 100_000).0];
        for i in 1..6 {
            files.push(make_file(dir.path(), &format!("f{i}.zip"), 10 * MIB).0);
        }
        let state = dir.path().join("state");
        let env =
            vec![("TELEPORT_TOKEN".to_string(), emu.token()), ("XDG_STATE_HOME".into(), state.display().to_string())];
        let env = if on_a_terminal { tty(&env, 100) } else { env };
        Interrupted { emu, dir, files, env }
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let paths: Vec<&std::path::Path> = self.files.iter().map(|p| p.as_path()).collect();
        teleport(&paths, &self.emu, &[&["--files", "1"], extra].concat())
    }

    async fn run_and_interrupt(&self, extra: &[&str]) -> std::process::Output {
        let emu = &self.emu;
        let creates = || {
            emu.request_log()
                .iter()
                .filter(|r| r.server == "api" && r.method == "POST" && r.path == "/api/v1/captures")
                .count()
        };
        let mut child = spawn_upload(&self.args(extra), &self.env);
        let t0 = Instant::now();
        while creates() < 2 {
            assert!(child.try_wait().unwrap().is_none(), "the run ended before it was interrupted");
            assert!(t0.elapsed() < Duration::from_secs(120), "no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_a_run_of_several_files_clears_the_board_once_and_counts_what_was_not_started() {
    let run = Interrupted::new(true).await;
    let out = run.run_and_interrupt(&[]).await;
    let err = stderr(&out);
    let summary = err.find("upload: 1 uploaded, 0 skipped, 0 failed, 1 interrupted, 4 not started; ");
    let Some(at) = summary else { panic!("the files counted as uploaded / interrupted / not started: {err:?}") };
    // The board was cleared before the summary: nothing is drawn after it.
    let after = &err[at..];
    assert!(!after.contains("\x1b[1A") && !after.contains("\x1b[2K") && !after.contains(" ["), "{after:?}");
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(
        lines.get(1).copied(),
        Some("upload: interrupted: run the same command again to resume; finished parts are not sent again"),
        "{after:?}"
    );
    assert_eq!(lines.len(), 2, "{after:?}");
    assert_eq!(err.matches("interrupted:").count(), 1, "told once: {err:?}");
    assert!(!err.contains("error: interrupted"), "{err:?}");
    assert_eq!(err.matches("upload: stopping: finishing the parts in flight").count(), 1, "{err:?}");
    assert!(!bar_frames(&err).iter().any(|l| l.contains("0 B/0 B")), "an empty bar: {err:?}");
    assert!(!err.contains("f5.zip"), "a file not started has no bar: {err:?}");

    // The same command carries on: f0.zip skipped, the others uploaded.
    run.emu.set_faults(Faults::default());
    let out = run_upload(run.args(&[]), run.env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("upload: 5 uploaded, 1 skipped, 0 failed; "), "{}", stderr(&out));
    drop(run.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_with_json_gives_files_not_started_a_status_of_their_own() {
    let run = Interrupted::new(false).await;
    let out = run.run_and_interrupt(&["--json"]).await;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json")).unwrap();
    let schema = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6, "one line per file: {}", stdout(&out));
    for l in &lines {
        assert!(schema.is_valid(l), "{l}");
    }
    let status = |name: &str| {
        let l = lines.iter().find(|l| l["file"].as_str().unwrap().ends_with(name)).unwrap();
        (l["status"].as_str().unwrap().to_string(), l["exit_code"].as_i64())
    };
    assert_eq!(status("f0.zip").0, "uploaded");
    assert_eq!(status("f1.zip"), ("failed".to_string(), Some(130)));
    for name in ["f2.zip", "f3.zip", "f4.zip", "f5.zip"] {
        assert_eq!(status(name), ("not_started".to_string(), None), "{name}");
    }
    let err = stderr(&out);
    assert!(err.contains("upload: 1 uploaded, 0 skipped, 0 failed, 1 interrupted, 4 not started; "), "{err}");
    assert_eq!(err.matches("interrupted:").count(), 1, "told once: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_only_on_a_terminal_unless_asked() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = make_file(dir.path(), "a.zip", 1000);
    let (b, _) = make_file(dir.path(), "b.zip", 1000);
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let run = |extra: &[&str], env: Vec<(String, String)>| {
        let a = teleport(&[&a, &b], &emu, &[&["--force", "-vv"], extra].concat());
        run_upload(a, env)
    };
    let with = |k: &str, v: &str| {
        let mut e = tty(&env, 100);
        e.push((k.into(), v.into()));
        e
    };
    // Logs into a pipe: no colour (NO_COLOR unset).
    let out = run(&[], env.clone()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("DEBUG"), "-vv logs: {}", stderr(&out));
    assert!(!has_colour(&stderr(&out)), "{:?}", stderr(&out));
    // --color always / UPLOAD_COLOR=always: colour even into the pipe.
    for out in [
        run(&["--color", "always"], env.clone()).await,
        run(&[], vec![("UPLOAD_COLOR".into(), "always".into())].into_iter().chain(env.clone()).collect()).await,
    ] {
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(has_colour(&stderr(&out)), "{:?}", stderr(&out));
    }
    // On a terminal: colour, unless NO_COLOR, --color never or UPLOAD_COLOR=never.
    let out = run(&[], tty(&env, 100)).await;
    assert!(has_colour(&stderr(&out)), "{:?}", stderr(&out));
    for out in [
        run(&[], with("NO_COLOR", "1")).await,
        run(&["--color", "never"], tty(&env, 100)).await,
        run(&[], with("UPLOAD_COLOR", "never")).await,
    ] {
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("\x1b[") && err.contains("total (2 files)"), "bars still drawn: {err:?}");
        assert!(!has_colour(&err), "{err:?}");
    }
    let out = run(&["--color", "sometimes"], env.clone()).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_fields_are_plain_values() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_file(dir.path(), "swing.mov", 100_000);
    let mut a = vec![path.display().to_string()];
    a.extend(args(&["--provider", "uplift", "--endpoint", &emu.api_url(), "-vv"]));
    a.extend(args(UPLIFT_FIELDS));
    let out = run_upload(a, vec![("UPLIFT_TOKEN".into(), emu.token())]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("uplift: capture reserved"), "{err}");
    let reserved = err.lines().find(|l| l.contains("uplift: capture reserved")).unwrap();
    assert!(reserved.contains("expires=20"), "a plain time: {reserved}");
    assert!(!err.contains("Some(") && !err.contains("None"), "Rust Debug in the logs: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_part_names_its_file() {
    let faults = Faults { fail_put_nth: vec![2], ..Faults::default() };
    let emu = emulator(Config { faults, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = make_file(dir.path(), "a.zip", MIB);
    let (b, _) = make_file(dir.path(), "b.zip", MIB);
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let out = run_upload(teleport(&[&a, &b], &emu, &["--files", "1"]), env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("upload: b.zip: part 1: attempt 1 failed: "), "{err}");
    assert_eq!(err.matches("attempt 1 failed").count(), 1, "{err}");
}

/// `script` running the binary with `argv` on a pty of 80 columns; stdin piped (a `\x03`
/// written to it is a Ctrl-C typed on the terminal).
fn on_a_pty(argv: &[String], env: &[(String, String)]) -> std::process::Command {
    assert!(
        std::process::Command::new("script").arg("--version").output().is_ok(),
        "util-linux `script` is needed to run the binary on a pty"
    );
    let mut line = format!("stty cols 80 rows 24 && exec '{}'", assert_cmd::cargo::cargo_bin("upload").display());
    for arg in argv {
        line.push_str(&format!(" '{arg}'"));
    }
    let template = upload_command(&[], env);
    let mut cmd = std::process::Command::new("script");
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Logs (`-v`), a rate limit whose bars show the limit in force (and whose bucket logs its
/// changes) and several files, on a real terminal: the run finishes (the bars' drawing asked
/// the limiter, which logged, which waited on the bars: a deadlock before one thread owned the
/// terminal), every log line shows, and Ctrl-C typed on the terminal ends a second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_a_rate_limit_and_bars_share_a_real_terminal_without_deadlock() {
    let emu = emulator(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..4).map(|i| make_file(dir.path(), &format!("f{i}.zip"), 2 * MIB).0).collect();
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    // A timetable: the bucket logs the rate in force (and each change) at -v.
    let limit = "00:00,6MiB 12:00,6MiB";
    let mut child =
        on_a_pty(&teleport(&paths, &emu, &["-v", "--limit-rate", limit, "--files", "2"]), &env).spawn().unwrap();
    let stdin = child.stdin.take();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the run on a terminal ends (no deadlock between the logs, the limiter and the bars)")
    .unwrap();
    drop(stdin);
    let screen = stdout(&out);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("rate limit in force: 6.00 MiB/s"), "the limiter's log line: {screen:?}");
    assert!(screen.contains("upload: 4 uploaded, 0 skipped, 0 failed; 8.00 MiB in "), "{screen:?}");
    assert!(!bar_frames(&screen).is_empty(), "bars drawn: {screen:?}");

    // Slower, then Ctrl-C typed on the terminal while the parts go.
    emu.set_faults(Faults::default());
    let state = dir.path().join("state");
    let mut a = teleport(&paths, &emu, &["-v", "--limit-rate", "00:00,512KiB 12:00,512KiB", "--force"]);
    a.extend(args(&["--state-dir", state.to_str().unwrap()]));
    let mut child = on_a_pty(&a, &env).spawn().unwrap();
    let t0 = Instant::now();
    while !emu.request_log().iter().any(|r| r.method == "PUT") {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before Ctrl-C");
        assert!(t0.elapsed() < Duration::from_secs(120), "no part went");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let screen = type_ctrl_c(child).await;
    assert!(screen.contains("run the same command again"), "{screen:?}");
}

/// Types Ctrl-C on the pty of `child` (see [`on_a_pty`]): the run ends with exit 130 within
/// 5 s. Returns what the screen was sent.
async fn type_ctrl_c(mut child: std::process::Child) -> String {
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let typed = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("Ctrl-C on the terminal ends the run")
    .unwrap();
    let took = typed.elapsed();
    drop(stdin);
    let screen = stdout(&out);
    assert_eq!(out.status.code(), Some(130), "{screen:?}");
    assert!(took < Duration::from_secs(5), "Ctrl-C took {took:?}: {screen:?}");
    screen
}

/// One file on a real terminal of 80 columns: the bar keeps the rate and the ETA and drops the
/// part count, and the finished run leaves no bar on the screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_on_a_real_terminal_at_80_columns_keeps_rate_and_eta_over_the_part_count() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "walkaround-of-the-lobby.zip", 12 * MIB);
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let state = dir.path().join("state");
    let mut a = teleport(&[&file], &emu, &["--limit-rate", "4MiB"]);
    a.extend(args(&["--state-dir", state.to_str().unwrap()]));
    let child = on_a_pty(&a, &env).spawn().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the run on a terminal ends")
    .unwrap();
    let screen = stdout(&out);
    assert!(out.status.success(), "{screen:?}");
    let bars = bar_frames(&screen);
    assert!(bars.iter().any(|l| l.contains("MiB/s") && l.contains("ETA")), "rate and ETA at 80 columns: {bars:?}");
    assert!(!bars.iter().any(|l| l.contains("ETA") && l.contains("parts ")), "the part count goes first: {bars:?}");
    assert!(bars.iter().all(|l| l.chars().count() < 80), "{bars:?}");
    let last = frames(&screen).last().cloned().unwrap_or_default();
    assert!(!(last.contains(" [") && last.contains("] ")), "a bar left on screen: {last:?} in {screen:?}");
}

/// Ctrl-C typed on a real terminal during a one-file upload: the run ends within 5 s (exit
/// 130) and leaves no bar on the screen: the bar's line is erased before the resume line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_real_terminal_during_one_file_leaves_no_bar() {
    let emu = emulator(Config { teleport_chunk_size: 5 * MIB, ..Config::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = make_file(dir.path(), "walkaround.zip", 20 * MIB);
    let env = vec![("TELEPORT_TOKEN".to_string(), emu.token())];
    let state = dir.path().join("state");
    let mut a = teleport(&[&file], &emu, &["--limit-rate", "1MiB"]);
    a.extend(args(&["--state-dir", state.to_str().unwrap()]));
    let mut child = on_a_pty(&a, &env).spawn().unwrap();
    let t0 = Instant::now();
    // The capture is created (a part's PUT is logged only once it ends: 20 s at 1 MiB/s).
    while !emu.request_log().iter().any(|r| r.method == "POST" && r.path == "/api/v1/captures") {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before Ctrl-C");
        assert!(t0.elapsed() < Duration::from_secs(120), "no capture was created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Long enough for the bar to be drawn (it is redrawn several times a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(status) = child.try_wait().unwrap() {
        let out = child.wait_with_output().unwrap();
        panic!("the run ended before Ctrl-C ({status}): {:?}", stdout(&out));
    }
    let screen = type_ctrl_c(child).await;
    assert!(!bar_frames(&screen).is_empty(), "a bar was drawn before Ctrl-C: {screen:?}");
    // After the last bar drawn: its line erased, then the error and the resume hint together
    // (no bar drawn between them), and no bar drawn again.
    let bar_end = screen.rfind("\x1b[0m] ").expect("a bar");
    let rest = &screen[bar_end..];
    let erased = rest.find("\r\x1b[2K").unwrap_or_else(|| panic!("the last bar is never erased: {rest:?}"));
    let said = rest.find("interrupted").unwrap_or_else(|| panic!("no interruption said: {rest:?}"));
    assert!(erased < said, "the bar left on the screen above the message: {rest:?}");
    assert!(rest.contains("run the same command again to resume"), "{rest:?}");
}
