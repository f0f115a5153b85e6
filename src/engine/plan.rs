//! The part plan: how a file is cut into 1-based parts. Pure functions, no I/O.

use crate::error::{Error, Result};

/// S3's minimum size of every part but the last.
pub const S3_MIN_PART: u64 = 5 * 1024 * 1024;
/// S3's maximum part size.
pub const S3_MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// S3's maximum number of parts.
pub const S3_MAX_PARTS: u32 = 10_000;

/// A file cut into `num_parts` parts of `part_size` bytes, the last one possibly shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartPlan {
    /// Total bytes.
    pub file_size: u64,
    /// Size of every part but the last.
    pub part_size: u64,
    /// Number of parts (≥ 1).
    pub num_parts: u32,
}

/// What a provider allows when the client picks the part size.
#[derive(Clone, Copy, Debug)]
pub struct PartLimits {
    /// Minimum size of every part but the last.
    pub min_part: u64,
    /// Maximum size of a part.
    pub max_part: u64,
    /// Maximum number of parts.
    pub max_parts: u32,
}

impl PartPlan {
    /// The byte range `(offset, len)` of part `number` (1-based).
    pub fn range(&self, number: u32) -> (u64, u64) {
        debug_assert!(number >= 1 && number <= self.num_parts);
        let offset = (number as u64 - 1) * self.part_size;
        let len = self.part_size.min(self.file_size - offset);
        (offset, len)
    }

    /// Part numbers 1..=num_parts.
    pub fn numbers(&self) -> std::ops::RangeInclusive<u32> {
        1..=self.num_parts
    }

    /// Checks a plan the SERVER chose (Teleport): part i covers
    /// `[(i-1)·chunk_size, min(i·chunk_size, bytesize))`, so `num_parts` must be
    /// `ceil(bytesize / chunk_size)`.
    pub fn from_server(provider: &'static str, file_size: u64, chunk_size: u64, num_parts: u64) -> Result<Self> {
        let protocol = |message: String| Error::Protocol { provider, what: "create capture".into(), message };
        if chunk_size == 0 {
            return Err(protocol("chunk_size is 0".into()));
        }
        let expected = file_size.div_ceil(chunk_size);
        if num_parts != expected {
            return Err(protocol(format!(
                "num_parts {num_parts} × chunk_size {chunk_size} does not cover the file of {file_size} bytes exactly (expected {expected} parts)"
            )));
        }
        let num_parts = u32::try_from(num_parts)
            .ok()
            .filter(|n| *n <= S3_MAX_PARTS)
            .ok_or_else(|| protocol(format!("num_parts {num_parts} exceeds S3's 10,000")))?;
        Ok(PartPlan { file_size, part_size: chunk_size, num_parts })
    }

    /// Chooses a plan on the CLIENT side: `preferred` when it fits, else the smallest size
    /// (rounded up to a whole MiB) that fits in `max_parts`. A `forced` size (from
    /// `--part-size`) is checked against the limits instead of adjusted.
    pub fn choose(file_size: u64, preferred: u64, forced: Option<u64>, limits: PartLimits) -> Result<Self> {
        const MIB: u64 = 1024 * 1024;
        if file_size == 0 {
            return Ok(PartPlan { file_size, part_size: limits.min_part, num_parts: 1 });
        }
        let max_total = limits.max_part.saturating_mul(limits.max_parts as u64);
        if file_size > max_total {
            return Err(Error::usage(
                format!(
                    "file of {} is too large: at most {} parts of {} each ({})",
                    crate::size::human(file_size),
                    limits.max_parts,
                    crate::size::human(limits.max_part),
                    crate::size::human(max_total)
                ),
                "split the file, or compress it",
            ));
        }
        let part_size = match forced {
            Some(p) => {
                if p < limits.min_part || p > limits.max_part {
                    return Err(Error::usage(
                        format!(
                            "--part-size {} is outside the provider's limits ({} to {})",
                            crate::size::human(p),
                            crate::size::human(limits.min_part),
                            crate::size::human(limits.max_part)
                        ),
                        "pick a part size within the limits, or leave --part-size out",
                    ));
                }
                if file_size.div_ceil(p) > limits.max_parts as u64 {
                    return Err(Error::usage(
                        format!(
                            "--part-size {} makes {} parts; the provider allows {}",
                            crate::size::human(p),
                            file_size.div_ceil(p),
                            limits.max_parts
                        ),
                        format!(
                            "use a part size of at least {}",
                            crate::size::human(file_size.div_ceil(limits.max_parts as u64))
                        ),
                    ));
                }
                p
            }
            None => {
                let needed = file_size.div_ceil(limits.max_parts as u64).div_ceil(MIB) * MIB;
                preferred.max(needed).clamp(limits.min_part, limits.max_part)
            }
        };
        let num_parts = file_size.div_ceil(part_size) as u32;
        Ok(PartPlan { file_size, part_size, num_parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn server_plan_covers_file() {
        let p = PartPlan::from_server("t", 10 * MIB + 1, 5 * MIB, 3).unwrap();
        assert_eq!(p.range(1), (0, 5 * MIB));
        assert_eq!(p.range(3), (10 * MIB, 1));
        assert!(PartPlan::from_server("t", 10 * MIB, 5 * MIB, 3).is_err());
        assert!(PartPlan::from_server("t", 10 * MIB, 0, 3).is_err());
    }

    #[test]
    fn client_plan_within_limits() {
        let lim = PartLimits { min_part: 5 * MIB, max_part: 600 * MIB, max_parts: 120 };
        // Grows past the preferred size to fit in 120 parts.
        let p = PartPlan::choose(10_000 * MIB, 16 * MIB, None, lim).unwrap();
        assert!(p.num_parts <= 120 && p.part_size.is_multiple_of(MIB) && p.part_size >= 16 * MIB);
        assert!(PartPlan::choose(120 * 600 * MIB + 1, 16 * MIB, None, lim).is_err());
        assert!(PartPlan::choose(100 * MIB, 16 * MIB, Some(4 * MIB), lim).is_err());
        assert!(PartPlan::choose(100 * MIB, 16 * MIB, Some(601 * MIB), lim).is_err());
        assert_eq!(PartPlan::choose(1, 16 * MIB, None, lim).unwrap().num_parts, 1);
    }

    #[test]
    fn every_byte_in_exactly_one_part() {
        // A small property check over many sizes: parts are contiguous, cover the file,
        // all but the last are part_size long.
        let lim = PartLimits { min_part: 5 * MIB, max_part: 600 * MIB, max_parts: 120 };
        let mut size = 1u64;
        while size < 70_000 * MIB {
            let p = PartPlan::choose(size, 16 * MIB, None, lim).unwrap();
            let mut next = 0;
            for n in p.numbers() {
                let (off, len) = p.range(n);
                assert_eq!(off, next);
                assert!(len > 0);
                if n < p.num_parts {
                    assert_eq!(len, p.part_size);
                }
                next = off + len;
            }
            assert_eq!(next, size);
            assert!(p.num_parts <= 120);
            size = size * 3 + 7;
        }
    }
}
