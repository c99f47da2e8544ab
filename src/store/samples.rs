//! Resource samples in the `resource_samples` table: writing one, reading
//! the last hour back at open and purging older ones.
//!
//! Rules:
//! - a sample is stored as JSON, keyed by its `at_us`; a second sample with
//!   the same time replaces the first (only a clock step can cause one);
//! - samples older than [`super::SAMPLE_RETENTION`] are purged at open and
//!   with the writer's periodic purge, and are never recovered;
//! - a row that cannot be decoded is skipped, with one warning per open.

use std::time::Duration;

use rusqlite::{CachedStatement, Connection, params};

use crate::model::ResourceSample;

/// Inserts or replaces one sample; parameters in [`insert`]'s order.
pub(super) const INSERT_SQL: &str =
    "INSERT OR REPLACE INTO resource_samples (at_us, sample) VALUES (?1, ?2)";

/// Writes one sample with a statement prepared from [`INSERT_SQL`]; the JSON
/// encoding happens here, on the writer thread.
pub(super) fn insert(
    stmt: &mut CachedStatement<'_>,
    sample: &ResourceSample,
) -> rusqlite::Result<()> {
    let json = serde_json::to_string(sample)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(error.into()))?;
    stmt.execute(params![sample.at_us, json])?;
    Ok(())
}

/// The oldest `at_us` kept at `now_us` for a retention of `max_age`.
pub(super) fn cutoff_us(max_age: Duration, now_us: i64) -> i64 {
    let max_age_us = i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX);
    now_us.saturating_sub(max_age_us)
}

/// Deletes the samples taken before `cutoff_us` and returns how many went.
///
/// `at_us` is the rowid, so this is a range delete, not a scan.
pub(super) fn purge(conn: &Connection, cutoff_us: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM resource_samples WHERE at_us < ?1")?
        .execute(params![cutoff_us])
}

/// Reads the samples taken at or after `cutoff_us`, oldest first, skipping
/// (with one warning in all) those that cannot be decoded.
pub(super) fn load(conn: &Connection, cutoff_us: i64) -> rusqlite::Result<Vec<ResourceSample>> {
    let mut stmt = conn
        .prepare("SELECT at_us, sample FROM resource_samples WHERE at_us >= ?1 ORDER BY at_us")?;
    let mut rows = stmt.query(params![cutoff_us])?;
    let mut samples = Vec::new();
    let mut skipped = 0_usize;
    let mut first_error: Option<(i64, String)> = None;
    while let Some(row) = rows.next()? {
        let at_us: i64 = row.get(0)?;
        let decoded = row
            .get_ref(1)?
            .as_str()
            .map_err(|error| error.to_string())
            .and_then(|text| {
                serde_json::from_str::<ResourceSample>(text).map_err(|error| error.to_string())
            });
        match decoded {
            Ok(sample) => samples.push(sample),
            Err(error) => {
                skipped += 1;
                first_error.get_or_insert((at_us, error));
            }
        }
    }
    if let Some((at_us, error)) = first_error {
        tracing::warn!(
            skipped,
            first_at_us = at_us,
            %error,
            "skipping stored resource samples that cannot be decoded"
        );
    }
    Ok(samples)
}
