//! Scheduler settings that must survive restarts (e.g. whether it is
//! paused): one text value per key.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

/// Every stored setting.
pub(super) fn load(conn: &Connection) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare("SELECT key, value FROM settings")?;
    let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// Stores `value` under `key`, replacing what was there, in its own
/// transaction.
pub(super) fn upsert(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}
