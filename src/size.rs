//! Byte sizes on the command line: `5MiB`, `8MB`, `1GiB`, `1048576`.

/// Parses a size with an optional unit. Decimal units (kB, MB, GB, TB) are powers of 1000,
/// binary units (KiB, MiB, GiB, TiB) powers of 1024; `K`, `M`, `G` alone are binary, as in rclone.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size '{text}': expected a number with an optional unit, e.g. 8MiB"));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit '{other}' in '{text}': use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB"
            ));
        }
    };
    let value: f64 = num.parse().map_err(|_| format!("invalid size '{text}'"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size '{text}' is out of range"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("size '{text}' is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// Formats bytes for people: `1.50 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{bytes} B") } else { format!("{v:.2} {}", UNITS[i]) }
}

/// A duration for people, the one formatter of the tool: `350ms`, `2s`, `1.5s`, `42s`, `5m`,
/// `2m05s`, `1h`, `2h07m` (whole minutes and hours without their zeros).
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 && !ms.is_multiple_of(1000) {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        use std::time::Duration;
        for (d, text) in [
            (Duration::from_millis(350), "350ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_secs(42), "42s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(125), "2m05s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(2 * 3600 + 7 * 60 + 9), "2h07m"),
        ] {
            assert_eq!(human_duration(d), text, "{d:?}");
        }
    }

    #[test]
    fn units() {
        assert_eq!(parse_size("5MiB").unwrap(), 5 * 1024 * 1024);
        assert_eq!(parse_size("8MB").unwrap(), 8_000_000);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("16m").unwrap(), 16 << 20);
        assert!(parse_size("5XB").unwrap_err().contains("unit"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("0.3B").is_err());
    }

    #[test]
    fn human_readable() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.50 KiB");
        assert_eq!(human(3 << 30), "3.00 GiB");
    }
}
