//! Answers of language models kept between runs (`ai_extract`'s cache), by a key the step makes of the model, the
//! prompt, the fields and the text: a re-run, a replay or a backfill asks only about texts it has not seen.

use std::collections::HashMap;

use super::*;

/// How many keys one lookup binds: well under SQLite's and PostgreSQL's parameter limits.
const KEYS_PER_QUERY: usize = 500;

impl StateStore {
    /// The kept answers of those `keys` that have one.
    pub fn model_answers(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
            let sql = format!("SELECT key, answer FROM model_answers WHERE key IN ({})", placeholders.join(", "));
            let args: Vec<db::Arg> = chunk.iter().map(db::Arg::from).collect();
            let rows = self.tx(|db| db.query(&sql, &args))?;
            for row in rows {
                found.insert(row.text(0)?, row.text(1)?);
            }
        }
        Ok(found)
    }

    /// Keeps `answers` (key, answer), replacing any kept under the same key.
    pub fn keep_model_answers(&self, answers: &[(String, String)]) -> Result<()> {
        if answers.is_empty() {
            return Ok(());
        }
        let at = now();
        self.tx(|db| {
            for (key, answer) in answers {
                db.execute(
                    "INSERT INTO model_answers (key, answer, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, created_at = excluded.created_at",
                    args![key, answer, at.as_str()],
                )?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_by_key_and_are_replaced() {
        let store = StateStore::in_memory().unwrap();
        let keys: Vec<String> = (0..1200).map(|i| format!("k{i}")).collect();
        let answers: Vec<(String, String)> = keys.iter().step_by(2).map(|k| (k.clone(), format!("a-{k}"))).collect();
        store.keep_model_answers(&answers).unwrap();
        let found = store.model_answers(&keys).unwrap();
        assert_eq!(found.len(), 600);
        assert_eq!(found["k1198"], "a-k1198");
        store.keep_model_answers(&[("k0".into(), "again".into())]).unwrap();
        assert_eq!(
            store.model_answers(&["k0".into(), "k1".into()]).unwrap(),
            HashMap::from([("k0".into(), "again".into())])
        );
    }
}
