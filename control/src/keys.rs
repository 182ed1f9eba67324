//! The etcd key layout under `/lodestar/v1/` and the decoding of one key/value pair
//! into a catalog record. `docs/etcd-schema.md` is the prose version of this file.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{Agent, Framework, Leader, Master, Task, TaskKey, VipAddress, SCHEMA_VERSION};

/// Every key Lodestar reads or writes starts with this.
pub const PREFIX: &str = "/lodestar/v1/";

/// Characters escaped in an id used as a key segment: `/` would split the segment,
/// `%` is the escape itself, and controls and spaces make keys hard to read.
const SEGMENT: &AsciiSet = &CONTROLS.add(b'/').add(b'%').add(b' ');

/// The kinds of record, each under its own folder (or, for the leader, one key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Task,
    Agent,
    Framework,
    Master,
    Leader,
    VipAddress,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Task,
        Kind::Agent,
        Kind::Framework,
        Kind::Master,
        Kind::Leader,
        Kind::VipAddress,
    ];

    /// The label used in metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Agent => "agent",
            Kind::Framework => "framework",
            Kind::Master => "master",
            Kind::Leader => "leader",
            Kind::VipAddress => "vip",
        }
    }

    fn folder(self) -> &'static str {
        match self {
            Kind::Task => "tasks/",
            Kind::Agent => "agents/",
            Kind::Framework => "frameworks/",
            Kind::Master => "masters/",
            Kind::Leader => "leader",
            Kind::VipAddress => "vips/",
        }
    }
}

/// The key of a record of `kind` with identity `id` (ignored for the leader). For a task this
/// is the legacy one-segment key, `tasks/<task-id>`; `task_key` gives a task's key.
pub fn key(kind: Kind, id: &str) -> String {
    match kind {
        Kind::Leader => format!("{PREFIX}leader"),
        _ => format!(
            "{PREFIX}{}{}",
            kind.folder(),
            utf8_percent_encode(id, SEGMENT)
        ),
    }
}

/// A task's key: `tasks/<framework-id>/<task-id>`, or `tasks/<task-id>` for a legacy task
/// (one without a framework id).
pub fn task_key(task: &TaskKey) -> String {
    if task.is_legacy() {
        return key(Kind::Task, &task.id);
    }
    format!(
        "{PREFIX}{}{}/{}",
        Kind::Task.folder(),
        utf8_percent_encode(&task.framework_id, SEGMENT),
        utf8_percent_encode(&task.id, SEGMENT)
    )
}

/// Which record a key names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKey {
    Task(TaskKey),
    Agent(String),
    Framework(String),
    Master(String),
    Leader,
    VipAddress(String),
}

impl RecordKey {
    pub fn kind(&self) -> Kind {
        match self {
            RecordKey::Task(_) => Kind::Task,
            RecordKey::Agent(_) => Kind::Agent,
            RecordKey::Framework(_) => Kind::Framework,
            RecordKey::Master(_) => Kind::Master,
            RecordKey::Leader => Kind::Leader,
            RecordKey::VipAddress(_) => Kind::VipAddress,
        }
    }

    /// The etcd key.
    pub fn to_key(&self) -> String {
        match self {
            RecordKey::Task(t) => task_key(t),
            RecordKey::Agent(id)
            | RecordKey::Framework(id)
            | RecordKey::Master(id)
            | RecordKey::VipAddress(id) => key(self.kind(), id),
            RecordKey::Leader => key(Kind::Leader, ""),
        }
    }

    fn of(kind: Kind, id: String) -> RecordKey {
        match kind {
            Kind::Task => RecordKey::Task(TaskKey::new("", id)),
            Kind::Agent => RecordKey::Agent(id),
            Kind::Framework => RecordKey::Framework(id),
            Kind::Master => RecordKey::Master(id),
            Kind::Leader => RecordKey::Leader,
            Kind::VipAddress => RecordKey::VipAddress(id),
        }
    }
}

/// How a rejection names the identity a value gives.
impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordKey::Task(t) if t.is_legacy() => {
                write!(f, "task id {:?} without a framework id", t.id)
            }
            RecordKey::Task(t) => {
                write!(f, "task id {:?} of framework {:?}", t.id, t.framework_id)
            }
            RecordKey::Agent(id)
            | RecordKey::Framework(id)
            | RecordKey::Master(id)
            | RecordKey::VipAddress(id) => write!(f, "id {id:?}"),
            RecordKey::Leader => f.write_str("the leader"),
        }
    }
}

/// The key range end for a prefix scan: the prefix with its last byte incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Task(Task),
    Agent(Agent),
    Framework(Framework),
    Master(Master),
    Leader(Leader),
    VipAddress(VipAddress),
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self {
            Record::Task(_) => Kind::Task,
            Record::Agent(_) => Kind::Agent,
            Record::Framework(_) => Kind::Framework,
            Record::Master(_) => Kind::Master,
            Record::Leader(_) => Kind::Leader,
            Record::VipAddress(_) => Kind::VipAddress,
        }
    }

    /// The identity the key is derived from.
    pub fn record_key(&self) -> RecordKey {
        match self {
            Record::Task(t) => RecordKey::Task(t.key()),
            Record::Agent(a) => RecordKey::Agent(a.id.clone()),
            Record::Framework(f) => RecordKey::Framework(f.id.clone()),
            Record::Master(m) => RecordKey::Master(m.id.clone()),
            Record::Leader(_) => RecordKey::Leader,
            Record::VipAddress(v) => RecordKey::VipAddress(v.name.clone()),
        }
    }

    pub fn key(&self) -> String {
        self.record_key().to_key()
    }

    /// The JSON value stored in etcd: the record with its schema version.
    pub fn to_value(&self) -> Vec<u8> {
        fn enc<T: Serialize>(v: &T) -> Vec<u8> {
            serde_json::to_vec(&Versioned {
                schema: SCHEMA_VERSION,
                data: v,
            })
            .expect("catalog records always serialize")
        }
        match self {
            Record::Task(v) => enc(v),
            Record::Agent(v) => enc(v),
            Record::Framework(v) => enc(v),
            Record::Master(v) => enc(v),
            Record::Leader(v) => enc(v),
            Record::VipAddress(v) => enc(v),
        }
    }
}

/// The stored form: `{"schema": 1, "data": {...}}`. An envelope rather than a flattened
/// field, so that both levels can refuse unknown fields and decoding is one pass.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Versioned<T> {
    schema: u32,
    data: T,
}

/// Why a key/value pair was not taken into the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("key {key:?} is not part of the /lodestar/v1/ layout")]
    UnknownKey { key: String },
    #[error("key {key:?} is not in canonical form (expected {canonical:?})")]
    NonCanonicalKey { key: String, canonical: String },
    #[error("{kind} value at {key:?} is not valid: {reason}")]
    Malformed {
        key: String,
        kind: &'static str,
        reason: String,
    },
    #[error(
        "{kind} value at {key:?} has schema version {found}; this build reads {SCHEMA_VERSION}"
    )]
    Schema {
        key: String,
        kind: &'static str,
        found: u64,
    },
    #[error("{kind} value at {key:?} names {id}, which does not match its key")]
    IdMismatch {
        key: String,
        kind: &'static str,
        id: String,
    },
}

impl Rejection {
    /// The record kind for the metric label (`unknown` for a key outside the layout).
    pub fn kind_label(&self) -> &'static str {
        match self {
            Rejection::Malformed { kind, .. }
            | Rejection::Schema { kind, .. }
            | Rejection::IdMismatch { kind, .. } => kind,
            Rejection::UnknownKey { .. } | Rejection::NonCanonicalKey { .. } => "unknown",
        }
    }

    /// A short reason for the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::UnknownKey { .. } => "unknown_key",
            Rejection::NonCanonicalKey { .. } => "non_canonical_key",
            Rejection::Malformed { .. } => "malformed",
            Rejection::Schema { .. } => "schema_version",
            Rejection::IdMismatch { .. } => "id_mismatch",
        }
    }
}

/// Which record a key names.
pub fn parse_key(key: &str) -> Result<RecordKey, Rejection> {
    let unknown = || Rejection::UnknownKey {
        key: key.to_string(),
    };
    let rest = key.strip_prefix(PREFIX).ok_or_else(unknown)?;
    if rest == "leader" {
        return Ok(RecordKey::Leader);
    }
    let decode = |seg: &str| -> Result<String, Rejection> {
        if seg.is_empty() {
            return Err(unknown());
        }
        Ok(percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| unknown())?
            .into_owned())
    };
    for kind in Kind::ALL {
        if kind == Kind::Leader {
            continue;
        }
        let Some(seg) = rest.strip_prefix(kind.folder()) else {
            continue;
        };
        let parsed = match (kind, seg.split_once('/')) {
            // `tasks/<framework-id>/<task-id>`; `tasks/<task-id>` is a legacy task key.
            (Kind::Task, Some((framework, id))) if !id.contains('/') => {
                RecordKey::Task(TaskKey::new(decode(framework)?, decode(id)?))
            }
            (_, Some(_)) => return Err(unknown()),
            (_, None) => RecordKey::of(kind, decode(seg)?),
        };
        // One record, one key: `web%2E1` would alias `web.1`, and a delete of one
        // spelling would remove the record the other still holds.
        let canonical = parsed.to_key();
        if canonical != key {
            return Err(Rejection::NonCanonicalKey {
                key: key.to_string(),
                canonical,
            });
        }
        return Ok(parsed);
    }
    Err(unknown())
}

/// Decodes one etcd key/value pair. Never panics, whatever the bytes.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Record, Rejection> {
    let key = std::str::from_utf8(key).map_err(|_| Rejection::UnknownKey {
        key: String::from_utf8_lossy(key).into_owned(),
    })?;
    let id = parse_key(key)?;
    let kind = id.kind();
    let record = match kind {
        Kind::Task => Record::Task(decode_value(key, kind, value)?),
        Kind::Agent => Record::Agent(decode_value(key, kind, value)?),
        Kind::Framework => Record::Framework(decode_value(key, kind, value)?),
        Kind::Master => Record::Master(decode_value(key, kind, value)?),
        Kind::Leader => Record::Leader(decode_value(key, kind, value)?),
        Kind::VipAddress => Record::VipAddress(decode_value(key, kind, value)?),
    };
    let named = record.record_key();
    if named != id {
        return Err(Rejection::IdMismatch {
            key: key.to_string(),
            kind: kind.as_str(),
            id: named.to_string(),
        });
    }
    Ok(record)
}

fn decode_value<T: DeserializeOwned>(key: &str, kind: Kind, value: &[u8]) -> Result<T, Rejection> {
    let malformed = |reason: String| Rejection::Malformed {
        key: key.to_string(),
        kind: kind.as_str(),
        reason,
    };
    // Check the version first, so that a newer writer's value says "schema", not "malformed".
    #[derive(Deserialize)]
    struct Header {
        schema: Option<serde_json::Value>,
    }
    let header: Header = serde_json::from_slice(value).map_err(|e| malformed(e.to_string()))?;
    match header.schema {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION as u64) => {}
        Some(serde_json::Value::Number(n)) => {
            return Err(Rejection::Schema {
                key: key.to_string(),
                kind: kind.as_str(),
                found: n.as_u64().unwrap_or(u64::MAX),
            })
        }
        Some(_) => return Err(malformed("\"schema\" is not a number".into())),
        None => return Err(malformed("missing \"schema\" version".into())),
    }
    let v: Versioned<T> = serde_json::from_slice(value).map_err(|e| malformed(e.to_string()))?;
    Ok(v.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn task(id: &str) -> Task {
        Task::new(id, "web", "marathon", "a1").with_framework_id("fw-0001")
    }

    #[test]
    fn keys_round_trip_awkward_ids() {
        for id in ["web.1", "a/b", "100%", "with space", "ünï"] {
            for framework in ["fw-0001", "odd/framework id", ""] {
                let task = TaskKey::new(framework, id);
                let k = task_key(&task);
                let segments = k[PREFIX.len() + "tasks/".len()..].split('/').count();
                assert_eq!(segments, if framework.is_empty() { 1 } else { 2 }, "{k}");
                assert_eq!(parse_key(&k).unwrap(), RecordKey::Task(task));
            }
        }
        assert_eq!(
            task_key(&TaskKey::new("fw-0001", "web.1")),
            "/lodestar/v1/tasks/fw-0001/web.1"
        );
        assert_eq!(key(Kind::Task, "web.1"), "/lodestar/v1/tasks/web.1");
        assert_eq!(key(Kind::Leader, "x"), "/lodestar/v1/leader");
        assert_eq!(
            key(Kind::VipAddress, "/group/app"),
            "/lodestar/v1/vips/%2Fgroup%2Fapp"
        );
        assert_eq!(
            parse_key("/lodestar/v1/vips/%2Fgroup%2Fapp").unwrap(),
            RecordKey::VipAddress("/group/app".into())
        );
    }

    #[test]
    fn values_round_trip() {
        for r in [
            Record::Task(task("web.1")),
            Record::Task(task("web.1").with_framework_id("")),
        ] {
            let decoded = decode(r.key().as_bytes(), &r.to_value()).unwrap();
            assert_eq!(decoded, r);
        }
    }

    /// A value written before tasks were keyed by framework (no `framework_id`, no port
    /// mappings) still decodes at its legacy key.
    #[test]
    fn legacy_task_values_decode() {
        let legacy = br#"{"schema":1,"data":{"id":"web.1","name":"web","framework":"marathon","agent":"a1","state":"running","ports":[{"number":31000}],"health":"unknown"}}"#;
        let Record::Task(t) = decode(b"/lodestar/v1/tasks/web.1", legacy).unwrap() else {
            panic!("a task")
        };
        assert_eq!(t.key(), TaskKey::new("", "web.1"));
        // At a framework's key the value must name that framework.
        let err = decode(b"/lodestar/v1/tasks/fw-0001/web.1", legacy).unwrap_err();
        assert_eq!(err.reason(), "id_mismatch");
        assert!(err.to_string().contains("without a framework id"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_a_reason() {
        let k = task_key(&TaskKey::new("fw-0001", "web.1"));
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "malformed"),
            (b"\xff\xfe", "malformed"),
            (b"{}", "malformed"),
            (b"{\"schema\":\"1\"}", "malformed"),
            (b"{\"schema\":2,\"data\":{}}", "schema_version"),
            (b"{\"schema\":1,\"data\":{\"id\":\"web.1\"}}", "malformed"),
            (b"{\"schema\":1,\"data\":null}", "malformed"),
            (b"[1,2,3]", "malformed"),
        ];
        for (value, reason) in cases {
            let err = decode(k.as_bytes(), value).unwrap_err();
            assert_eq!(err.reason(), *reason, "{err}");
        }
        let err = decode(k.as_bytes(), &Record::Task(task("other")).to_value()).unwrap_err();
        assert_eq!(err.reason(), "id_mismatch");
        let other_framework = task("web.1").with_framework_id("fw-0002");
        let err = decode(k.as_bytes(), &Record::Task(other_framework).to_value()).unwrap_err();
        assert_eq!(err.reason(), "id_mismatch");
        assert!(err.to_string().contains("fw-0002"), "{err}");
        for alias in [
            "/lodestar/v1/tasks/web%2e1",
            "/lodestar/v1/tasks/web%2E1",
            "/lodestar/v1/tasks/a%2fb",
            "/lodestar/v1/tasks/fw%2D1/web.1",
        ] {
            let err = parse_key(alias).unwrap_err();
            assert_eq!(err.reason(), "non_canonical_key", "{alias}");
        }
        assert!(parse_key("/lodestar/v1/tasks/a%2Fb").is_ok());
        for bad_key in [
            "/lodestar/v1/nope/x",
            "/lodestar/v1/tasks/",
            "/lodestar/v1/tasks/a/b/c",
            "/lodestar/v1/tasks/a/",
            "/lodestar/v1/tasks//b",
            "/lodestar/v1/agents/a/b",
            "/other",
        ] {
            let err = decode(bad_key.as_bytes(), b"{}").unwrap_err();
            assert_eq!(err.reason(), "unknown_key", "{bad_key}");
        }
        // Unknown fields are refused: a typo must not silently drop data.
        let mut v: serde_json::Value =
            serde_json::from_slice(&Record::Task(task("web.1")).to_value()).unwrap();
        v["data"]["ipz"] = serde_json::json!([]);
        let err = decode(k.as_bytes(), &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(err.reason(), "malformed");
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
