//! Dead-letter stores: the embedded state store (the default), NDJSON files, or a table of a database connection
//! (`settings.dead_letters`; the table store lives with the connectors). Each offers four plain operations; listing,
//! purging and settling a replay are built on them once, here.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::state_store::{DeadLetter, DeadLetterFilter, NewDeadLetter, StateStore};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type DlqResult<T> = Result<T, BoxError>;

/// Where a pipeline's dead letters are kept.
pub trait DeadLetters: Send + Sync {
    /// Keeps `letters`, each with a new id, retry count 0 and the current time.
    fn add(&self, pipeline: &str, run_id: &str, letters: &[NewDeadLetter]) -> DlqResult<()>;
    /// A pipeline's dead letters that match every filter given, oldest first.
    fn matching(&self, pipeline: &str, filter: &DeadLetterFilter) -> DlqResult<Vec<DeadLetter>>;
    /// Deletes these dead letters of `pipeline`; returns how many there were.
    fn remove(&self, pipeline: &str, ids: &[i64]) -> DlqResult<usize>;
    /// Counts one more retry of a dead letter, with the reason it failed again when there is a new one.
    fn retried(&self, pipeline: &str, id: i64, error: Option<&str>) -> DlqResult<()>;
}

/// Deletes a pipeline's dead letters that match every filter given; returns how many.
pub fn purge(store: &dyn DeadLetters, pipeline: &str, filter: &DeadLetterFilter) -> DlqResult<usize> {
    let ids: Vec<i64> = store.matching(pipeline, filter)?.iter().map(|l| l.id).collect();
    if ids.is_empty() { Ok(0) } else { store.remove(pipeline, &ids) }
}

/// Settles the dead letters `replayed` of `step` after replay run `run_id`. If it succeeded, those the step set
/// aside again (the same record, as a new dead letter of that run) keep their place with the new reason and one
/// more retry, and the rest are removed; if it failed, all stay with one more retry. Returns how many failed again.
pub fn settle_replay(
    store: &dyn DeadLetters,
    pipeline: &str,
    step: &str,
    replayed: &[DeadLetter],
    run_id: &str,
    succeeded: bool,
) -> DlqResult<usize> {
    let filter = DeadLetterFilter { run_id: Some(run_id.to_string()), step: Some(step.to_string()), id: None };
    let mut again = store.matching(pipeline, &filter)?;
    let mut passed = Vec::new();
    let mut failed_again = 0;
    for letter in replayed {
        let twin = again.iter().position(|new| new.record == letter.record);
        match twin {
            Some(i) if succeeded => {
                let new = again.remove(i);
                store.retried(pipeline, letter.id, Some(&new.error))?;
                store.remove(pipeline, &[new.id])?;
                failed_again += 1;
            }
            _ if succeeded => passed.push(letter.id),
            _ => {
                store.retried(pipeline, letter.id, None)?;
                failed_again += 1;
            }
        }
    }
    if !passed.is_empty() {
        store.remove(pipeline, &passed)?;
    }
    if !succeeded {
        // The failed run loaded nothing; its dead letters of this step repeat the replayed ones.
        let repeats: Vec<i64> = again.iter().map(|l| l.id).collect();
        if !repeats.is_empty() {
            store.remove(pipeline, &repeats)?;
        }
    }
    Ok(failed_again)
}

impl DeadLetters for StateStore {
    fn add(&self, pipeline: &str, run_id: &str, letters: &[NewDeadLetter]) -> DlqResult<()> {
        Ok(self.add_dead_letters(pipeline, run_id, letters)?)
    }

    fn matching(&self, pipeline: &str, filter: &DeadLetterFilter) -> DlqResult<Vec<DeadLetter>> {
        Ok(self.dead_letters_matching(pipeline, filter)?)
    }

    fn remove(&self, pipeline: &str, ids: &[i64]) -> DlqResult<usize> {
        Ok(self.remove_dead_letters(pipeline, ids)?)
    }

    fn retried(&self, pipeline: &str, id: i64, error: Option<&str>) -> DlqResult<()> {
        Ok(self.count_dead_letter_retry(pipeline, id, error)?)
    }
}

/// Dead letters as NDJSON, one file per pipeline (`<dir>/<pipeline>.ndjson`), one dead letter per line. Adding
/// appends; removing and counting a retry rewrite the file under a temporary name, then rename it.
pub struct NdjsonDeadLetters {
    dir: PathBuf,
    /// Serializes writers within this process.
    lock: Mutex<()>,
}

impl NdjsonDeadLetters {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, lock: Mutex::new(()) }
    }

    fn file(&self, pipeline: &str) -> PathBuf {
        self.dir.join(format!("{pipeline}.ndjson"))
    }

    fn read(path: &Path) -> DlqResult<Vec<DeadLetter>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
        };
        let mut out = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            out.push(
                serde_json::from_str(&line)
                    .map_err(|e| format!("{}:{}: not a dead letter: {e}", path.display(), i + 1))?,
            );
        }
        Ok(out)
    }

    fn rewrite(path: &Path, letters: &[DeadLetter]) -> DlqResult<()> {
        let temp = path.with_extension("ndjson.tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&temp)?);
        for letter in letters {
            serde_json::to_writer(&mut out, letter)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temp, path)?;
        Ok(())
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DeadLetters for NdjsonDeadLetters {
    fn add(&self, pipeline: &str, run_id: &str, letters: &[NewDeadLetter]) -> DlqResult<()> {
        let _guard = self.guard();
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.file(pipeline);
        let first = Self::read(&path)?.iter().map(|l| l.id).max().unwrap_or(0) + 1;
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let mut text = Vec::new();
        for (id, l) in (first..).zip(letters) {
            let letter = DeadLetter {
                id,
                pipeline: pipeline.to_string(),
                run_id: run_id.to_string(),
                step: l.step.clone(),
                record: l.record.clone(),
                error: l.error.clone(),
                origin: l.origin.clone(),
                created_at: created.clone(),
                retry_count: 0,
            };
            serde_json::to_writer(&mut text, &letter)?;
            text.push(b'\n');
        }
        out.write_all(&text)?;
        out.sync_data()?;
        Ok(())
    }

    fn matching(&self, pipeline: &str, filter: &DeadLetterFilter) -> DlqResult<Vec<DeadLetter>> {
        let letters = Self::read(&self.file(pipeline))?;
        Ok(letters.into_iter().filter(|l| matches(l, filter)).collect())
    }

    fn remove(&self, pipeline: &str, ids: &[i64]) -> DlqResult<usize> {
        let _guard = self.guard();
        let path = self.file(pipeline);
        let (gone, kept): (Vec<DeadLetter>, Vec<DeadLetter>) =
            Self::read(&path)?.into_iter().partition(|l| ids.contains(&l.id));
        if !gone.is_empty() {
            Self::rewrite(&path, &kept)?;
        }
        Ok(gone.len())
    }

    fn retried(&self, pipeline: &str, id: i64, error: Option<&str>) -> DlqResult<()> {
        let _guard = self.guard();
        let path = self.file(pipeline);
        let mut letters = Self::read(&path)?;
        for letter in letters.iter_mut().filter(|l| l.id == id) {
            letter.retry_count += 1;
            if let Some(error) = error {
                letter.error = error.to_string();
            }
        }
        Self::rewrite(&path, &letters)
    }
}

/// Whether a dead letter passes every filter given.
fn matches(letter: &DeadLetter, filter: &DeadLetterFilter) -> bool {
    filter.run_id.as_ref().is_none_or(|r| *r == letter.run_id)
        && filter.step.as_ref().is_none_or(|s| *s == letter.step)
        && filter.id.is_none_or(|i| i == letter.id)
}

/// Dead letters by step, for commands that act step by step.
pub fn by_step(letters: Vec<DeadLetter>) -> BTreeMap<String, Vec<DeadLetter>> {
    let mut out: BTreeMap<String, Vec<DeadLetter>> = BTreeMap::new();
    for letter in letters {
        out.entry(letter.step.clone()).or_default().push(letter);
    }
    out
}
