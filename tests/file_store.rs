//! The file store: reloads a changed catalog file, refuses a broken one and keeps the last
//! good snapshot, recovers when the file is fixed.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lodestar_control::demo::DEMO_CATALOG;
use lodestar_control::{FileStore, Snapshot};
use support::eventually;

const POLL: Duration = Duration::from_millis(20);
const PATIENCE: Duration = Duration::from_secs(10);

/// Replaces the file the way editors do: write a sibling, then rename over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A catalog of one task, `id`.
fn one_task(id: &str) -> String {
    let ips = r#"ips = [{ ip = "198.18.0.5", source = "netinfo" }]"#;
    format!("schema = 1\n[[tasks]]\nid = \"{id}\"\nname = \"web\"\nframework = \"marathon\"\nagent = \"a1\"\n{ips}\n")
}

/// Waits until the store publishes revision `revision`; that snapshot.
async fn until_revision(store: &FileStore, revision: i64, what: &str) -> Arc<Snapshot> {
    eventually(PATIENCE, what, || async {
        let s = store.current();
        (s.revision == revision).then_some(s)
    })
    .await
}

/// The ids of a snapshot's tasks, in order.
fn task_ids(snap: &Snapshot) -> Vec<&str> {
    snap.tasks.keys().map(|k| k.id.as_str()).collect()
}

#[tokio::test]
async fn reloads_on_change_and_keeps_the_last_good_catalog_on_a_broken_edit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.toml");
    std::fs::write(&path, DEMO_CATALOG).unwrap();
    let store = FileStore::spawn(&path, POLL).unwrap();
    let first = store.current();
    assert_eq!(first.revision, 1);
    assert_eq!(first.tasks.len(), 4);

    replace(&path, &one_task("t1"));
    let second = until_revision(&store, 2, "the reload").await;
    assert_eq!(task_ids(&second), ["t1"]);

    // Broken edits: a syntax error, an unknown field, a bad VIP label, an in-place truncation.
    let broken = [
        "schema = 1\n[[tasks]\n".to_string(),
        one_task("t2").replace("ips =", "ipz ="),
        one_task("t2")
            + "[tasks.discovery]\nports = [{ number = 80, labels = { VIP_0 = \"web\" } }]\n",
        String::new(),
    ];
    for (n, text) in broken.iter().enumerate() {
        if n == 3 {
            std::fs::write(&path, text).unwrap();
        } else {
            replace(&path, text);
        }
        eventually(PATIENCE, "the broken file to be refused", || async {
            (store.reload_failures() == n as u64 + 1).then_some(())
        })
        .await;
        let now = store.current();
        assert_eq!(now.revision, 2, "broken edit {n} was published");
        assert_eq!(task_ids(&now), ["t1"]);
    }

    // Fixed: the next good version is published.
    replace(&path, &one_task("t3"));
    let third = until_revision(&store, 3, "the reload after the fix").await;
    assert_eq!(task_ids(&third), ["t3"]);
}

#[tokio::test]
async fn json_catalogs_are_read_too_and_a_broken_start_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.json");
    std::fs::write(
        &path,
        r#"{"schema":1,"agents":[{"id":"a1","hostname":"h1","addresses":["198.18.0.1"]}]}"#,
    )
    .unwrap();
    let store = FileStore::spawn(&path, POLL).unwrap();
    assert_eq!(store.current().agents.len(), 1);

    std::fs::write(&path, r#"{"schema":1,"agents":[{"id":"a1"}]}"#).unwrap();
    let err = FileStore::spawn(&path, POLL)
        .err()
        .expect("a broken file must not start");
    let msg = err.to_string();
    assert!(
        msg.contains("catalog.json") && msg.contains("hostname"),
        "{msg}"
    );
    let err = FileStore::spawn(dir.path().join("missing.toml"), POLL)
        .err()
        .expect("a missing file must not start");
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

#[tokio::test]
async fn a_same_size_rewrite_with_the_old_mtime_is_still_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.toml");
    std::fs::write(&path, one_task("t1")).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let store = FileStore::spawn(&path, POLL).unwrap();

    // Same length, same mtime, rewritten in place: only the content (and ctime) differ.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut &f, one_task("t2").as_bytes()).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let snap = until_revision(&store, 2, "the in-place rewrite").await;
    assert_eq!(task_ids(&snap), ["t2"]);
}
