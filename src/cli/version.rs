//! `upload --version`: the crate's version, and the commit it was built from with that
//! commit's date when the build had them (`build.rs` asks git, as ripgrep's does; a build from
//! a tarball without git prints the version alone).

use std::sync::OnceLock;

/// `0.1.0 (abcdef1234 2026-12-06)`, or `0.1.0` without git.
pub(crate) fn long() -> &'static str {
    static LONG: OnceLock<String> = OnceLock::new();
    LONG.get_or_init(|| {
        format(env!("CARGO_PKG_VERSION"), option_env!("UPLOAD_BUILD_GIT_HASH"), option_env!("UPLOAD_BUILD_GIT_DATE"))
    })
}

fn format(version: &str, hash: Option<&str>, date: Option<&str>) -> String {
    match (known(hash), known(date)) {
        (Some(h), Some(d)) => format!("{version} ({h} {d})"),
        (Some(h), None) => format!("{version} ({h})"),
        _ => version.to_string(),
    }
}

fn known(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_names_the_commit_and_its_date_when_known() {
        for (hash, date, want) in [
            (Some("abcdef1234"), Some("2026-12-06"), "0.1.0 (abcdef1234 2026-12-06)"),
            (Some("abcdef1234"), None, "0.1.0 (abcdef1234)"),
            (Some("abcdef1234"), Some(""), "0.1.0 (abcdef1234)"),
            (None, Some("2026-12-06"), "0.1.0"),
            (Some(""), None, "0.1.0"),
            (None, None, "0.1.0"),
        ] {
            assert_eq!(super::format("0.1.0", hash, date), want, "{hash:?} {date:?}");
        }
    }
}
