//! A project: the pipeline files of one directory, each parsed and checked. A file with mistakes is left out and
//! its mistakes kept for the API; a changed file replaces its pipeline only once it is valid.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use weir_spec::Pipeline;

/// One valid pipeline and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub pipeline: Arc<Pipeline>,
}

impl Entry {
    /// The directory relative paths in the pipeline start from.
    pub fn dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).unwrap_or_else(|| ".".into())
    }
}

#[derive(Debug, Default, Clone)]
pub struct Project {
    /// Valid pipelines by name.
    pub pipelines: BTreeMap<String, Entry>,
    /// Files whose latest version has mistakes, as `file:line:col: message`.
    pub broken: BTreeMap<PathBuf, Vec<String>>,
    /// Each file's modification time when last read.
    seen: HashMap<PathBuf, Option<SystemTime>>,
}

impl Project {
    /// Loads every `*.yaml`/`*.yml` file directly in `dir`, but for test files (`*.test.yaml`, for `weir test`).
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let mut project = Self::default();
        project.reload(dir)?;
        Ok(project)
    }

    /// Re-reads the files that changed since they were read, and new ones, and forgets deleted ones. An invalid
    /// change is recorded in `broken` and the previous version of that pipeline keeps running. Returns the names
    /// whose definition changed or went away.
    pub fn reload(&mut self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut changed = Vec::new();
        // Sets and maps, not scans: a project may hold 100,000 files, and this runs every few seconds.
        let files: BTreeSet<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .filter(|p| !weir_spec::is_test_file(p))
            .collect();
        // A deleted file takes its pipeline (and its schedules) with it.
        let gone: Vec<String> =
            self.pipelines.iter().filter(|(_, e)| !files.contains(&e.path)).map(|(n, _)| n.clone()).collect();
        for name in gone {
            self.pipelines.remove(&name);
            changed.push(name);
        }
        self.broken.retain(|path, _| files.contains(path));
        self.seen.retain(|path, _| files.contains(path));
        let mut to_read = Vec::new();
        for path in files {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            if self.seen.get(&path) != Some(&modified) {
                self.seen.insert(path.clone(), modified);
                to_read.push(path);
            }
        }
        if to_read.is_empty() {
            return Ok(changed);
        }
        // The name each file's pipeline had, to notice a renamed one.
        let names: HashMap<PathBuf, String> =
            self.pipelines.iter().map(|(name, e)| (e.path.clone(), name.clone())).collect();
        for path in to_read {
            match Pipeline::from_file(&path, &weir_connectors::registry::environment()) {
                Ok(pipeline) => {
                    self.broken.remove(&path);
                    let name = pipeline.name().to_string();
                    // A renamed pipeline leaves its old name.
                    if let Some(old) = names.get(&path)
                        && *old != name
                        && self.pipelines.get(old).is_some_and(|e| e.path == path)
                    {
                        self.pipelines.remove(old);
                    }
                    self.pipelines.insert(name.clone(), Entry { path, pipeline: Arc::new(pipeline) });
                    changed.push(name);
                }
                Err(mistakes) => {
                    tracing::error!(file = %path.display(), "Pipeline file not loaded (a previous version keeps running): {}", mistakes.join("; "));
                    self.broken.insert(path, mistakes);
                }
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_beside_pipelines_are_not_pipelines() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline =
            "name: p\nsteps:\n  a:\n    read_csv: { path: a.csv }\n  b:\n    write_csv: { input: a, path: b.csv }\n";
        std::fs::write(dir.path().join("p.yaml"), pipeline).unwrap();
        std::fs::write(dir.path().join("p.test.yaml"), "cases: {}\n").unwrap();
        let project = Project::load(dir.path()).unwrap();
        assert_eq!(project.pipelines.keys().collect::<Vec<_>>(), ["p"]);
        assert!(project.broken.is_empty(), "{:?}", project.broken);
    }

    #[test]
    fn a_reload_follows_renames_mistakes_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = |name: &str| {
            format!(
                "name: {name}\nsteps:\n  a:\n    read_csv: {{ path: a.csv }}\n  b:\n    write_csv: {{ input: a, path: b.csv }}\n"
            )
        };
        let write = |file: &str, text: &str, age: u64| {
            let path = dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            let at = SystemTime::now() - std::time::Duration::from_secs(age);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(at).unwrap();
        };
        write("one.yaml", &pipeline("first"), 30);
        write("two.yaml", &pipeline("second"), 30);
        let mut project = Project::load(dir.path()).unwrap();
        assert_eq!(project.pipelines.keys().collect::<Vec<_>>(), ["first", "second"]);

        write("one.yaml", &pipeline("renamed"), 20);
        write("two.yaml", "name: second\nsteps: [", 20);
        assert_eq!(project.reload(dir.path()).unwrap(), ["renamed"]);
        assert_eq!(
            project.pipelines.keys().collect::<Vec<_>>(),
            ["renamed", "second"],
            "a broken file keeps its pipeline"
        );
        assert_eq!(project.broken.keys().collect::<Vec<_>>(), [&dir.path().join("two.yaml")]);
        assert!(project.reload(dir.path()).unwrap().is_empty(), "nothing changed");

        std::fs::remove_file(dir.path().join("two.yaml")).unwrap();
        assert_eq!(project.reload(dir.path()).unwrap(), ["second"]);
        assert_eq!(project.pipelines.keys().collect::<Vec<_>>(), ["renamed"]);
        assert!(project.broken.is_empty());
    }
}
