//! The file store: a whole catalog in one TOML or JSON document, for a single node and for
//! demos. It is reloaded when the file changes; a broken edit keeps the last good snapshot.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::{DocumentProblem, StoreError};
use crate::keys::Record;
use crate::metrics as m;
use crate::model::{Agent, Framework, Leader, Master, Task, VipAddress, SCHEMA_VERSION};
use crate::snapshot::{CatalogState, Snapshot, Source};

/// A whole catalog in one document: the same records that etcd holds one per key.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDocument {
    pub schema: u32,
    /// The etcd revision the document was taken at (the agent's local cache writes it).
    pub revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frameworks: Vec<Framework>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<Agent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masters: Vec<Master>,
    pub leader: Option<Leader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip_addresses: Vec<VipAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
}

/// The document formats, chosen by file extension (`.json`, else TOML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

impl Format {
    pub fn for_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

impl CatalogDocument {
    /// The whole catalog of a snapshot as one document.
    pub fn from_snapshot(s: &Snapshot) -> Self {
        CatalogDocument {
            schema: SCHEMA_VERSION,
            revision: Some(s.revision),
            frameworks: s.frameworks.values().map(|v| (**v).clone()).collect(),
            agents: s.agents.values().map(|v| (**v).clone()).collect(),
            masters: s.masters.values().map(|v| (**v).clone()).collect(),
            leader: s.leader.as_deref().cloned(),
            vip_addresses: s.vip_addresses.values().map(|v| (**v).clone()).collect(),
            tasks: s.tasks.values().map(|v| (**v).clone()).collect(),
        }
    }

    /// Parses and validates a document, reporting every problem at once.
    pub fn parse(text: &str, format: Format, origin: &str) -> Result<Self, StoreError> {
        let invalid = |problems: Vec<DocumentProblem>| StoreError::Invalid {
            origin: origin.to_string(),
            problems,
        };
        let syntax = |message| invalid(vec![DocumentProblem::Syntax(message)]);
        let doc: CatalogDocument = match format {
            Format::Json => serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?,
            Format::Toml => toml::from_str(text).map_err(|e| syntax(toml_error(text, &e)))?,
        };
        let problems = doc.problems();
        if problems.is_empty() {
            Ok(doc)
        } else {
            Err(invalid(problems))
        }
    }

    /// What is wrong with the document beyond its syntax.
    fn problems(&self) -> Vec<DocumentProblem> {
        let mut problems = Vec::new();
        if self.schema != SCHEMA_VERSION {
            problems.push(DocumentProblem::Schema { found: self.schema });
        }
        let mut seen = BTreeSet::new();
        for task in &self.tasks {
            if !seen.insert(task.key()) {
                problems.push(DocumentProblem::DuplicateTask(task.key()));
            }
        }
        // A task's id is unique only within its framework (checked above); the others' ids are
        // unique in the document.
        fn ids<T>(items: &[T], id: fn(&T) -> &str) -> Vec<&str> {
            items.iter().map(id).collect()
        }
        let ids = [
            ("task", false, ids(&self.tasks, |t| &t.id)),
            ("agent", true, ids(&self.agents, |a| &a.id)),
            ("framework", true, ids(&self.frameworks, |f| &f.id)),
            ("master", true, ids(&self.masters, |m| &m.id)),
            ("VIP address", true, ids(&self.vip_addresses, |v| &v.name)),
        ];
        for (what, unique, ids) in ids {
            if ids.iter().any(|id| id.is_empty()) {
                problems.push(DocumentProblem::EmptyId { what });
            }
            let mut seen = BTreeSet::new();
            for id in ids {
                if unique && !seen.insert(id) {
                    let id = id.to_string();
                    problems.push(DocumentProblem::Duplicate { what, id });
                }
            }
        }
        for task in &self.tasks {
            for source in task.vips().1 {
                let task = task.id.clone();
                problems.push(DocumentProblem::VipLabel { task, source });
            }
        }
        problems
    }

    /// The records, in an order where referenced things come first.
    pub fn into_records(self) -> Vec<Record> {
        let mut out = Vec::new();
        out.extend(self.frameworks.into_iter().map(Record::Framework));
        out.extend(self.agents.into_iter().map(Record::Agent));
        out.extend(self.masters.into_iter().map(Record::Master));
        out.extend(self.leader.map(Record::Leader));
        out.extend(self.vip_addresses.into_iter().map(Record::VipAddress));
        out.extend(self.tasks.into_iter().map(Record::Task));
        out
    }

    pub fn into_state(self) -> CatalogState {
        let mut state = CatalogState::new();
        for r in self.into_records() {
            // VIP label errors were refused by `parse` already.
            state.upsert(r);
        }
        state
    }
}

/// A TOML error on one line: `line L, column C: message` (toml's own text spans several).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// Reads and validates a catalog file.
pub fn read_file(path: &Path) -> Result<CatalogDocument, StoreError> {
    parse_file(path, &read_text(path)?)
}

fn read_text(path: &Path) -> Result<String, StoreError> {
    std::fs::read_to_string(path).map_err(|source| StoreError::FileRead {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_file(path: &Path, text: &str) -> Result<CatalogDocument, StoreError> {
    CatalogDocument::parse(
        text,
        Format::for_path(path),
        &format!("file {}", path.display()),
    )
}

/// What identifies a version of the file without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    changed: (i64, i64),
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: md.modified().ok(),
        changed: (md.ctime(), md.ctime_nsec()),
        len: md.len(),
        inode: md.ino(),
    })
}

impl Stamp {
    /// Could a same-size rewrite within the file system's timestamp granularity still be
    /// hidden behind this stamp? Then the content is compared on the next poll too.
    fn is_recent(&self) -> bool {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < Duration::from_secs(2))
    }
}

fn content_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// A catalog file, polled for changes. Dropping it stops the polling.
pub struct FileStore {
    rx: watch::Receiver<Arc<Snapshot>>,
    reload_failures: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FileStore {
    /// Loads the file (an error if it is broken: there is no last good state yet) and starts
    /// polling it every `interval`. Each successful reload publishes the next revision.
    pub fn spawn(path: impl Into<PathBuf>, interval: Duration) -> Result<Self, StoreError> {
        let path = path.into();
        let mut seen = stamp(&path);
        let text = read_text(&path)?;
        let mut seen_hash = content_hash(&text);
        let doc = parse_file(&path, &text)?;
        let source = Source::File(path.display().to_string());
        let mut revision = 1;
        let (tx, rx) = watch::channel(Arc::new(
            doc.into_state().snapshot(revision, source.clone()),
        ));
        let reload_failures = Arc::new(AtomicU64::new(0));
        let failures = reload_failures.clone();
        info!(path = %path.display(), "serving the catalog file");
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = stamp(&path);
                let recheck = now.as_ref().is_some_and(Stamp::is_recent);
                if now == seen && !recheck {
                    continue;
                }
                seen = now;
                let parsed = match read_text(&path) {
                    Ok(text) => {
                        let hash = content_hash(&text);
                        if hash == seen_hash {
                            continue;
                        }
                        seen_hash = hash;
                        parse_file(&path, &text)
                    }
                    Err(e) => Err(e),
                };
                match parsed {
                    Ok(doc) => {
                        revision += 1;
                        let snapshot = doc.into_state().snapshot(revision, source.clone());
                        info!(path = %path.display(), revision, tasks = snapshot.tasks.len(), "reloaded the catalog file");
                        metrics::counter!(m::SNAPSHOTS_PUBLISHED_TOTAL).increment(1);
                        tx.send_replace(Arc::new(snapshot));
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(m::FILE_RELOAD_FAILURES_TOTAL).increment(1);
                        warn!("keeping the last good catalog: {e}");
                    }
                }
            }
        });
        Ok(FileStore {
            rx,
            reload_failures,
            task,
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// Reloads refused because the file was broken.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            schema = 1
            [[tasks]]
            id = "t1"
            name = "web"
            framework = "marathon"
            agent = "a1"
            [[tasks.discovery.ports]]
            number = 80
            labels = { VIP_0 = "nonsense" }
            [[tasks]]
            id = "t1"
            name = "web"
            framework = "marathon"
            agent = "a1"
        "#;
        let err = CatalogDocument::parse(text, Format::Toml, "test").unwrap_err();
        let StoreError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn syntax_errors_name_the_place() {
        let err = CatalogDocument::parse("schema = 1\n[[tasks]]\nid = ", Format::Toml, "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.toml") && err.contains("line 3"), "{err}");
        let err = CatalogDocument::parse(r#"{"schema":1,"taskz":[]}"#, Format::Json, "f.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("taskz"), "{err}");
    }
}
