//! Where the command line keeps its state and finds its configuration file when nothing says
//! otherwise (`--state-dir` / `UPLOAD_STATE_DIR`, the config file's `state_dir`, and
//! `UPLOAD_CONFIG` win over these):
//!
//! | | state directory | configuration file |
//! |---|---|---|
//! | Linux, macOS | `$XDG_STATE_HOME/upload`, else `~/.local/state/upload` | `$XDG_CONFIG_HOME/upload/config.toml`, else `~/.config/upload/config.toml` |
//! | Windows | `%XDG_STATE_HOME%\upload` when set, else `%LOCALAPPDATA%\upload` | `%XDG_CONFIG_HOME%\upload\config.toml` when set, else `%APPDATA%\upload\config.toml` |
//!
//! macOS keeps the XDG layout, as uv does (etcetera's XDG strategy) and gh: a command-line
//! tool's files sit where its Linux users and their dotfiles and scripts expect them, with no
//! space in the path (`~/Library/Application Support` is for applications). On Windows the state
//! (journals, locks, done records: they name this machine's files) is machine-local
//! (`LOCALAPPDATA`), the configuration roams with the user (`APPDATA`).

use std::path::PathBuf;

use crate::error::Error;

/// An environment variable, unset when empty.
type Env<'a> = &'a dyn Fn(&str) -> Option<PathBuf>;

fn var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The default state directory; `None` when the environment names no place for it.
pub(crate) fn state_dir() -> Option<PathBuf> {
    state_dir_in(&var, cfg!(windows))
}

/// The default configuration file; `None` when the environment names no place for it.
pub(crate) fn config_file() -> Option<PathBuf> {
    config_file_in(&var, cfg!(windows))
}

fn state_dir_in(env: Env<'_>, windows: bool) -> Option<PathBuf> {
    if let Some(x) = env("XDG_STATE_HOME") {
        return Some(x.join("upload"));
    }
    if windows {
        env("LOCALAPPDATA").map(|d| d.join("upload"))
    } else {
        env("HOME").map(|h| h.join(".local/state/upload"))
    }
}

fn config_file_in(env: Env<'_>, windows: bool) -> Option<PathBuf> {
    if let Some(x) = env("XDG_CONFIG_HOME") {
        return Some(x.join("upload").join("config.toml"));
    }
    if windows {
        env("APPDATA").map(|d| d.join("upload").join("config.toml"))
    } else {
        env("HOME").map(|h| h.join(".config/upload/config.toml"))
    }
}

/// What is missing when [`state_dir`] finds nothing: a run never goes on without one silently
/// (it would keep no journal, take no lock and record nothing as done).
pub(crate) fn no_state_dir() -> Error {
    let vars = if cfg!(windows) { "LOCALAPPDATA nor XDG_STATE_HOME" } else { "HOME nor XDG_STATE_HOME" };
    Error::usage(
        format!("no state directory for resume journals, locks and done records: neither {vars} is set"),
        "pass --state-dir DIR (or set UPLOAD_STATE_DIR)",
    )
}

/// What is missing when [`config_file`] finds nothing.
pub(crate) fn no_config_file() -> Error {
    let vars = if cfg!(windows) { "APPDATA nor XDG_CONFIG_HOME" } else { "HOME nor XDG_CONFIG_HOME" };
    Error::usage(format!("no configuration path: neither {vars} is set"), "set UPLOAD_CONFIG to the file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<const N: usize>(pairs: [(&'static str, &'static str); N]) -> impl Fn(&str) -> Option<PathBuf> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| PathBuf::from(v))
    }

    #[test]
    fn defaults_per_system() {
        let local = r"C:\Users\ann\AppData\Local";
        let roaming = r"C:\Users\ann\AppData\Roaming";
        let e = env([("HOME", "/home/ann"), ("LOCALAPPDATA", local), ("APPDATA", roaming)]);
        assert_eq!(state_dir_in(&e, false).unwrap(), PathBuf::from("/home/ann/.local/state/upload"));
        assert_eq!(config_file_in(&e, false).unwrap(), PathBuf::from("/home/ann/.config/upload/config.toml"));
        assert_eq!(state_dir_in(&e, true).unwrap(), PathBuf::from(local).join("upload"));
        assert_eq!(config_file_in(&e, true).unwrap(), PathBuf::from(roaming).join("upload").join("config.toml"));
        // HOME alone names no place on Windows (the profile's AppData is what LOCALAPPDATA says).
        let home_only = env([("HOME", "/home/ann")]);
        assert_eq!(state_dir_in(&home_only, true), None);
        assert_eq!(config_file_in(&home_only, true), None);
    }

    #[test]
    fn xdg_wins_everywhere() {
        let e = env([
            ("HOME", "/home/ann"),
            ("LOCALAPPDATA", "L"),
            ("XDG_STATE_HOME", "/x/s"),
            ("XDG_CONFIG_HOME", "/x/c"),
        ]);
        for windows in [false, true] {
            assert_eq!(state_dir_in(&e, windows).unwrap(), PathBuf::from("/x/s").join("upload"));
            assert_eq!(config_file_in(&e, windows).unwrap(), PathBuf::from("/x/c").join("upload").join("config.toml"));
        }
    }

    #[test]
    fn nothing_set_is_no_place_and_says_how_to_give_one() {
        let none = env([]);
        for windows in [false, true] {
            assert_eq!(state_dir_in(&none, windows), None);
            assert_eq!(config_file_in(&none, windows), None);
        }
        let e = no_state_dir();
        assert!(e.to_string().starts_with("no state directory"), "{e}");
        assert_eq!(e.hint(), Some("pass --state-dir DIR (or set UPLOAD_STATE_DIR)"));
        assert_eq!(crate::cli::report::exit_code(&e), crate::cli::report::exit::USAGE);
    }
}
