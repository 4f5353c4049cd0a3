//! State values kept between runs.

use super::*;

impl StateStore {
    /// The stored state values of a pipeline.
    pub fn state(&self, pipeline: &str) -> Result<BTreeMap<String, TypedValue>> {
        self.tx(|db| {
            let mut out = BTreeMap::new();
            for r in
                db.query("SELECT name, value FROM state_values WHERE pipeline = ?1 ORDER BY name", args![pipeline])?
            {
                let (name, json) = (r.text(0)?, r.text(1)?);
                let value = serde_json::from_str(&json)
                    .map_err(|e| StateError::Corrupt { name: name.clone(), message: e.to_string() })?;
                out.insert(name, value);
            }
            Ok(out)
        })
    }

    /// Sets one state value by hand (`weir state set`).
    pub fn set_state(&self, pipeline: &str, name: &str, value: &TypedValue) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO state_values (pipeline, name, value, updated_at, run_id) VALUES (?1, ?2, ?3, ?4, NULL)
                 ON CONFLICT (pipeline, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, run_id = NULL",
                args![pipeline, name, serde_json::to_string(value).expect("typed values serialize"), now()],
            )
        })?;
        Ok(())
    }

    /// Forgets one state value, or all of a pipeline's, so the declared defaults apply again.
    pub fn reset_state(&self, pipeline: &str, name: Option<&str>) -> Result<usize> {
        self.tx(|db| {
            db.execute(
                "DELETE FROM state_values WHERE pipeline = ?1 AND (CAST(?2 AS TEXT) IS NULL OR name = ?2)",
                args![pipeline, name],
            )
        })
        .map(|n| n as usize)
    }
}
