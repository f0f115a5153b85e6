//! The configuration file: `$XDG_CONFIG_HOME/upload/config.toml` (else
//! `~/.config/upload/config.toml`; Windows: `%APPDATA%\upload\config.toml`, see
//! [`crate::cli::dirs`]; `UPLOAD_CONFIG` names another file).
//!
//! Precedence: command-line flags > environment variables > this file. Example:
//!
//! ```toml
//! [defaults]
//! provider = "teleport"
//! limit_rate = "08:00,4MiB 18:00,off"   # --limit-rate
//! connect_timeout = "10s"                # --connect-timeout
//! idle_timeout = "60s"                   # --idle-timeout
//! speed_limit = "10KiB"                  # --speed-limit (with speed_time, --speed-time)
//! until = "06:30"                        # --until (or max_duration = "8h", --max-duration)
//!
//! [teleport]
//! endpoint = "https://teleport.varjo.com"
//! client_id = "..."            # built-in sign-in (client_secret too; or token_command)
//! client_secret = "..."
//!
//! [truvideo]
//! api_key = "..."              # signed login: api_key, secret_key, external_id
//! secret_key = "..."
//! external_id = "..."
//!
//! [uplift]
//! athlete_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
//!
//! [apertur]
//! destinations = ["d290f1ee-6c54-4b01-90e6-d701748f0851"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::args::{ProviderName, UploadArgs};
use crate::error::{Error, Result};
use crate::redact::Secret;

/// The whole file: `[defaults]` and one section per provider, named by its descriptor's
/// [`config_section`](crate::providers::Descriptor::config_section).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ConfigFile {
    /// Settings for every provider.
    pub(crate) defaults: Defaults,
    /// The providers' sections that the file has, by section name.
    #[serde(flatten)]
    pub(crate) sections: BTreeMap<String, Section>,
}

/// `[defaults]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Defaults {
    /// Provider used when `--provider` is not given.
    pub(crate) provider: Option<String>,
    /// State directory.
    pub(crate) state_dir: Option<PathBuf>,
    /// Bandwidth limit of every run (`--limit-rate`): `10MiB`, `off`, or a timetable.
    pub(crate) limit_rate: Option<String>,
    /// Longest wait for a connection (`--connect-timeout`): `500ms`, `10s`.
    pub(crate) connect_timeout: Option<String>,
    /// Longest time an exchange may move nothing (`--idle-timeout`): `30s`, `2m`.
    pub(crate) idle_timeout: Option<String>,
    /// The low-speed limit (`--speed-limit`): bytes per second, `10KiB`.
    pub(crate) speed_limit: Option<String>,
    /// Its window (`--speed-time`): `30s`.
    pub(crate) speed_time: Option<String>,
    /// Stop cleanly this long after the start (`--max-duration`): `8h`.
    pub(crate) max_duration: Option<String>,
    /// Stop cleanly at this local time (`--until`): `06:30`.
    pub(crate) until: Option<String>,
}

/// A provider's section. Only the keys that make sense for the provider are used.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Section {
    /// API origin.
    pub(crate) endpoint: Option<String>,
    /// Token (prefer `token_command` or the environment: this file is plain text).
    pub(crate) token: Option<Secret>,
    /// Command printing a fresh token.
    pub(crate) token_command: Option<String>,
    /// Teleport client id (built-in sign-in).
    pub(crate) client_id: Option<String>,
    /// Teleport client secret.
    pub(crate) client_secret: Option<Secret>,
    /// TruVideo API key.
    pub(crate) api_key: Option<Secret>,
    /// TruVideo secret key.
    pub(crate) secret_key: Option<Secret>,
    /// TruVideo external id.
    pub(crate) external_id: Option<String>,
    /// TruVideo: use the release-candidate API.
    pub(crate) rc: Option<bool>,
    /// TruVideo media.creator.
    pub(crate) creator: Option<String>,
    /// Uplift athlete.
    pub(crate) athlete_id: Option<String>,
    /// Uplift activity.
    pub(crate) activity: Option<String>,
    /// Uplift movement.
    pub(crate) movement: Option<String>,
    /// Uplift camera setup.
    pub(crate) camera_setup: Option<String>,
    /// Uplift orientation.
    pub(crate) orientation: Option<String>,
    /// Apertur destinations for new sessions.
    #[serde(default)]
    pub(crate) destinations: Vec<String>,
}

/// The keys `upload config show` prints as `***`: secrets, and the token command (which may
/// hold one: `echo $SECRET`, `curl -u user:password ...`).
const SECRET_KEYS: [&str; 5] = ["token", "client_secret", "secret_key", "api_key", "token_command"];

/// The largest configuration file read (a few KiB in practice): `UPLOAD_CONFIG=/dev/zero`, or a
/// path to a disk image by mistake, is refused instead of read into memory for ever.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl ConfigFile {
    /// Where the file is looked for.
    pub(crate) fn path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("UPLOAD_CONFIG").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(p));
        }
        crate::cli::dirs::config_file()
    }

    /// Loads the file; a missing file at the default place is an empty configuration, a
    /// missing file named by `UPLOAD_CONFIG` is an error.
    pub(crate) fn load() -> Result<Self> {
        if let Some(p) = std::env::var_os("UPLOAD_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from)
            && !p.exists()
        {
            return Err(Error::usage(
                format!("config file {} (named by UPLOAD_CONFIG) does not exist", p.display()),
                "create it, or unset UPLOAD_CONFIG to use the default place (`upload config path`)",
            ));
        }
        match Self::path() {
            Some(p) if p.exists() => Self::load_from(&p),
            _ => Ok(Self::default()),
        }
    }

    /// Loads a given file.
    pub(crate) fn load_from(path: &Path) -> Result<Self> {
        let text = read_capped(path)?;
        let invalid = |msg: String| {
            Error::usage(
                format!("config file {} is invalid: {msg}", path.display()),
                "fix or remove the file; `upload config show` prints what is read",
            )
        };
        let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
        let mut file = ConfigFile::default();
        for (key, value) in table {
            let in_section = |e: toml::de::Error| invalid(format!("[{key}]: {}", e.message().trim()));
            if key == "defaults" {
                file.defaults = value.try_into().map_err(in_section)?;
            } else if crate::providers::PROVIDERS.iter().any(|d| d.config_section == key) {
                let section: Section = value.clone().try_into().map_err(in_section)?;
                file.sections.insert(key, section);
            } else {
                let known: Vec<String> = std::iter::once("[defaults]".to_string())
                    .chain(crate::providers::PROVIDERS.iter().map(|d| format!("[{}]", d.config_section)))
                    .collect();
                return Err(invalid(format!("unknown section [{key}]: the sections are {}", known.join(", "))));
            }
        }
        Ok(file)
    }

    /// The section of a provider (empty when the file has none).
    pub(crate) fn section(&self, provider: ProviderName) -> Section {
        self.sections.get(provider.descriptor().config_section).cloned().unwrap_or_default()
    }

    /// The default provider, if the file names one.
    pub(crate) fn default_provider(&self) -> Result<Option<ProviderName>> {
        use clap::ValueEnum;
        self.defaults
            .provider
            .as_deref()
            .map(|p| {
                ProviderName::from_str(p, true).map_err(|_| {
                    Error::usage(
                        format!("config file: unknown provider '{p}'"),
                        "use teleport, truvideo, uplift or apertur",
                    )
                })
            })
            .transpose()
    }

    /// Fills what the command line and the environment left unset.
    pub(crate) fn apply(&self, args: &mut UploadArgs) -> Result<()> {
        if args.provider.is_none() {
            args.provider = self.default_provider()?;
        }
        if args.state_dir.is_none() {
            args.state_dir = self.defaults.state_dir.clone();
        }
        fill(&mut args.limit_rate, self.defaults.limit_rate.clone());
        let Some(provider) = args.provider else { return Ok(()) };
        // The connection keys (endpoint, token, sign-in, rc) are merged by
        // `settings::connect`; these are the upload's own. A key of another provider's flags
        // (say `creator` in `[uplift]`) fills a flag this provider does not read.
        let s = self.section(provider);
        fill(&mut args.truvideo.creator, s.creator);
        fill(&mut args.uplift.athlete_id, s.athlete_id);
        fill(&mut args.uplift.activity, s.activity);
        fill(&mut args.uplift.movement, s.movement);
        fill(&mut args.uplift.camera_setup, s.camera_setup);
        fill(&mut args.uplift.orientation, s.orientation);
        if args.apertur.destinations.is_empty() {
            args.apertur.destinations = s.destinations;
        }
        Ok(())
    }

    /// Fills the sign-in credentials the command line and the environment left unset from the
    /// provider's section (`client_id`/`client_secret`, `api_key`/`secret_key`/`external_id`).
    pub(crate) fn apply_sign_in(&self, provider: ProviderName, a: &mut crate::cli::args::SignInArgs) {
        let s = self.section(provider);
        fill(&mut a.client_id, s.client_id);
        fill(&mut a.client_secret, s.client_secret);
        fill(&mut a.api_key, s.api_key);
        fill(&mut a.external_id, s.external_id);
        fill(&mut a.secret_key, s.secret_key);
    }

    /// Fills what `upload auth check`'s command line and environment left unset (the
    /// provider; the connection keys are merged by `settings::connect`).
    pub(crate) fn apply_auth_check(&self, a: &mut crate::cli::args::AuthCheckArgs) -> Result<()> {
        if a.provider.is_none() {
            a.provider = self.default_provider()?;
        }
        Ok(())
    }

    /// The file as TOML with secrets replaced by `***`.
    pub(crate) fn redacted_toml(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("the configuration serializes");
        if let Some(table) = value.as_table_mut() {
            for (_, section) in table.iter_mut() {
                if let Some(section) = section.as_table_mut() {
                    for key in SECRET_KEYS {
                        if let Some(v) = section.get_mut(key) {
                            *v = toml::Value::String("***".into());
                        }
                    }
                }
            }
        }
        toml::to_string_pretty(&value).expect("TOML serializes")
    }
}

/// The file's text, at most [`MAX_CONFIG_BYTES`] of it (a longer file, or an endless one such
/// as `/dev/zero`, is a usage error naming it).
fn read_capped(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::File { path: path.into(), source: e })?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::File { path: path.into(), source: e })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::usage(
            format!("config file {} is larger than 1 MiB: not a configuration file", path.display()),
            "point UPLOAD_CONFIG at the TOML file (`upload config path` shows where it is looked for)",
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        Error::usage(
            format!("config file {} is not UTF-8 text", path.display()),
            "point UPLOAD_CONFIG at the TOML file (`upload config path` shows where it is looked for)",
        )
    })
}

fn fill<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_apply_and_redact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            "[defaults]\nprovider = \"uplift\"\n[uplift]\ntoken = \"sekret-token\"\nathlete_id = \"a\"\nendpoint = \"http://127.0.0.1:1\"\n[teleport]\ntoken_command = \"echo sekret-in-command\"\n",
        )
        .unwrap();
        let c = ConfigFile::load_from(&p).unwrap();
        let mut args =
            <crate::cli::args::Cli as clap::Parser>::parse_from(["upload", "x.mov", "--activity", "golf"]).upload;
        c.apply(&mut args).unwrap();
        assert_eq!(args.provider, Some(ProviderName::Uplift));
        assert_eq!(args.uplift.athlete_id.as_deref(), Some("a"));
        assert_eq!(args.uplift.activity.as_deref(), Some("golf"));
        assert_eq!(c.section(ProviderName::Uplift).endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(c.section(ProviderName::Teleport).endpoint, None);
        let shown = c.redacted_toml();
        assert!(shown.contains("***") && !shown.contains("sekret-token"), "{shown}");
        assert!(shown.contains("token_command = \"***\"") && !shown.contains("sekret-in-command"), "{shown}");

        std::fs::write(&p, "[uplift]\nathelete_id = \"a\"\n").unwrap();
        let e = ConfigFile::load_from(&p).unwrap_err();
        assert!(e.to_string().contains("athelete_id") && e.to_string().contains("[uplift]"), "{e}");
        std::fs::write(&p, "[teleprot]\ntoken = \"t\"\n").unwrap();
        let e = ConfigFile::load_from(&p).unwrap_err().to_string();
        assert!(e.contains("unknown section [teleprot]") && e.contains("[teleport]"), "{e}");
    }
}
