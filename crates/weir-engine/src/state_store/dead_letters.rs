//! Dead letters in the embedded store.

use super::*;

impl StateStore {
    pub fn add_dead_letters(&self, pipeline: &str, run_id: &str, letters: &[NewDeadLetter]) -> Result<()> {
        let created = now();
        self.tx(|db| {
            for l in letters {
                db.execute(
                    "INSERT INTO dead_letters (pipeline, run_id, step, record, error, origin, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    args![pipeline, run_id, &l.step, l.record.to_string(), &l.error, l.origin.as_ref(), created.as_str()],
                )?;
            }
            Ok(())
        })
    }

    /// A pipeline's dead letters that match every filter given, oldest first.
    pub fn dead_letters_matching(&self, pipeline: &str, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        self.tx(|db| {
            db.query(
                "SELECT id, pipeline, run_id, step, record, error, origin, created_at, retry_count FROM dead_letters
                 WHERE pipeline = ?1 AND (CAST(?2 AS TEXT) IS NULL OR run_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR step = ?3)
                     AND (CAST(?4 AS BIGINT) IS NULL OR id = ?4)
                 ORDER BY id",
                args![pipeline, filter.run_id.as_ref(), filter.step.as_ref(), filter.id],
            )?
            .iter()
            .map(dead_letter_from_row)
            .collect()
        })
    }

    /// Deletes these dead letters of `pipeline`; returns how many there were.
    pub fn remove_dead_letters(&self, pipeline: &str, ids: &[i64]) -> Result<usize> {
        self.tx(|db| {
            let mut removed = 0;
            for id in ids {
                removed +=
                    db.execute("DELETE FROM dead_letters WHERE pipeline = ?1 AND id = ?2", args![pipeline, *id])?;
            }
            Ok(removed as usize)
        })
    }

    /// Counts one more retry of a dead letter, with its new reason when given.
    pub fn count_dead_letter_retry(&self, pipeline: &str, id: i64, error: Option<&str>) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "UPDATE dead_letters SET retry_count = retry_count + 1, error = coalesce(?3, error) WHERE pipeline = ?1 AND id = ?2",
                args![pipeline, id, error],
            )
        })?;
        Ok(())
    }
}

/// A record that could not be processed, kept with why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub pipeline: String,
    pub run_id: String,
    pub step: String,
    /// The original record as a JSON object (or the raw line when it could not be decoded).
    pub record: serde_json::Value,
    pub error: String,
    /// Where the record came from, e.g. `data/orders.csv:17`.
    pub origin: Option<String>,
    pub created_at: String,
    pub retry_count: i64,
}

/// A dead letter before it is stored.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub step: String,
    pub record: serde_json::Value,
    pub error: String,
    pub origin: Option<String>,
}

/// Which dead letters an operation applies to; a field left `None` does not narrow.
#[derive(Debug, Default, Clone)]
pub struct DeadLetterFilter {
    pub run_id: Option<String>,
    pub step: Option<String>,
    pub id: Option<i64>,
}

fn dead_letter_from_row(r: &Row) -> Result<DeadLetter> {
    let record = r.text(4)?;
    Ok(DeadLetter {
        id: r.int(0)?,
        pipeline: r.text(1)?,
        run_id: r.text(2)?,
        step: r.text(3)?,
        record: serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record)),
        error: r.text(5)?,
        origin: r.opt_text(6)?,
        created_at: r.text(7)?,
        retry_count: r.int(8)?,
    })
}
