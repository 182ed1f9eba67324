//! Reading `GET /master/state` as it arrives: the body is parsed on a blocking thread while it
//! streams in, and each agent, framework and task is translated as soon as it is read and then
//! dropped. Neither the document's text nor its parsed form is ever held whole: at 100,000
//! tasks those were about 90 MB and 330 MB, where the translation is a fraction of that.

use std::fmt;
use std::future::Future;
use std::io::{BufReader, Read};

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::mesos::state::{MasterInfo, Slave, Task};
use crate::mesos::translate::Translator;

/// What a state document says about who leads, beside its translated catalog.
#[derive(Debug, Default)]
pub struct Head {
    /// This master's own PID.
    pub pid: Option<String>,
    /// The leading master's PID.
    pub leader: Option<String>,
    pub leader_info: Option<MasterInfo>,
}

/// Why reading a state document failed; `E` is the chunk source's error.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The body could not be read to its end (the connection failed).
    #[error("the body could not be read: {0}")]
    Transfer(#[source] E),
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// What is wrong with a body that was read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than allowed.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body is not a state document (malformed, truncated, wrong shape).
    #[error("not a Mesos state document: {0}")]
    Parse(#[source] serde_json::Error),
    /// The parsing thread panicked or was cancelled.
    #[error("not a Mesos state document: the parser failed: {0}")]
    Parser(#[source] tokio::task::JoinError),
}

/// Parses a state document from `chunks` (the body as it arrives), translating as it goes.
pub async fn read<S: ChunkSource>(
    mut chunks: S,
    max_body: usize,
    site_attribute: &str,
) -> Result<(Head, Translator), ReadError<S::Error>> {
    // A few chunks in flight at most: the reader never runs far ahead of the parser.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let mut translator = Translator::new(site_attribute);
    let parser = tokio::task::spawn_blocking(move || {
        let reader = BufReader::with_capacity(
            64 << 10,
            ChunkReader {
                rx,
                chunk: None,
                at: 0,
            },
        );
        let mut de = serde_json::Deserializer::from_reader(reader);
        let head = Document { t: &mut translator }
            .deserialize(&mut de)
            .and_then(|head| de.end().map(|()| head));
        head.map(|h| (h, translator))
    });
    let mut total = 0usize;
    let transfer = loop {
        match chunks.next_chunk().await {
            Ok(Some(chunk)) => {
                total += chunk.len();
                if total > max_body {
                    break Err(BodyError::TooLarge(max_body).into());
                }
                // The parser stopped (a parse error): its result says why.
                if tx.send(chunk).await.is_err() {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(ReadError::Transfer(e)),
        }
    };
    // The end of the body (or its failure) ends the parser's input.
    drop(tx);
    let parsed = parser.await.map_err(BodyError::Parser)?;
    transfer?;
    Ok(parsed.map_err(BodyError::Parse)?)
}

/// A body's chunks, in order: a response's, or a test's list.
pub trait ChunkSource {
    /// Why the next chunk could not be read.
    type Error: std::error::Error + Send + Sync + 'static;
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, Self::Error>>;
}

impl ChunkSource for reqwest::Response {
    type Error = reqwest::Error;
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, reqwest::Error> {
        self.chunk().await
    }
}

impl<E: std::error::Error + Send + Sync + 'static> ChunkSource
    for std::vec::IntoIter<Result<Bytes, E>>
{
    type Error = E;
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, E> {
        self.next().transpose()
    }
}

/// The channel's chunks as one byte stream.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Option<Bytes>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(c) = &self.chunk {
                let rest = &c[self.at..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.at += n;
                    return Ok(n);
                }
            }
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.chunk = Some(c);
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
    }
}

/// The state document: who leads, and the agents and frameworks handed to the translator.
struct Document<'a> {
    t: &'a mut Translator,
}

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = Head;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Head, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = Head;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Mesos master state object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "pid" => head.pid = map.next_value()?,
                "leader" => head.leader = map.next_value()?,
                "leader_info" => head.leader_info = map.next_value()?,
                "slaves" => map.next_value_seed(List {
                    t: self.t,
                    of: Of::Agents,
                })?,
                "frameworks" => map.next_value_seed(List {
                    t: self.t,
                    of: Of::Frameworks,
                })?,
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(head)
    }
}

/// Which of the document's lists a `List` reads.
#[derive(Clone, Copy)]
enum Of {
    /// `slaves`
    Agents,
    /// `frameworks`
    Frameworks,
    /// a framework's `tasks`
    Tasks,
}

/// One of the document's lists, each element translated as it is read.
struct List<'a> {
    t: &'a mut Translator,
    of: Of,
}

impl<'de> DeserializeSeed<'de> for List<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self.of {
            Of::Agents => "a list of agents",
            Of::Frameworks => "a list of frameworks",
            Of::Tasks => "a list of tasks",
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.of {
            Of::Agents => {
                while let Some(slave) = seq.next_element::<Slave>()? {
                    self.t.slave(&slave);
                }
            }
            Of::Frameworks => {
                while seq
                    .next_element_seed(FrameworkSeed { t: &mut *self.t })?
                    .is_some()
                {}
            }
            Of::Tasks => {
                while let Some(task) = seq.next_element::<Task>()? {
                    self.t.task(&task);
                }
            }
        }
        Ok(())
    }
}

/// One framework: its own fields, and its tasks.
struct FrameworkSeed<'a> {
    t: &'a mut Translator,
}

impl<'de> DeserializeSeed<'de> for FrameworkSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FrameworkSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a framework object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let first = self.t.framework_tasks_start();
        let (mut id, mut name, mut pid, mut hostname) = (None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" => id = Some(map.next_value::<String>()?),
                "name" => name = Some(map.next_value::<String>()?),
                "pid" => pid = map.next_value::<Option<String>>()?,
                "hostname" => hostname = map.next_value::<Option<String>>()?,
                "tasks" => map.next_value_seed(List {
                    t: &mut *self.t,
                    of: Of::Tasks,
                })?,
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        let id = id.ok_or_else(|| serde::de::Error::missing_field("id"))?;
        let name = name.ok_or_else(|| serde::de::Error::missing_field("name"))?;
        self.t.framework(id, name, pid.as_deref(), hostname, first);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::mesos::state::State;
    use crate::mesos::translate::{translate, Translation};

    fn task(i: usize, slave: &str) -> Value {
        json!({
            "id": format!("app{i}.1"), "name": format!("app{i}"), "framework_id": "fw",
            "slave_id": slave, "state": "TASK_RUNNING",
            "resources": {"ports": "[31000-31001]"},
            "labels": [{"key": "team", "value": "a"}],
            "discovery": {"name": format!("app{i}"), "ports": {"ports": [{"number": 8080, "name": "http", "protocol": "tcp"}]}},
            "statuses": [{"state": "TASK_RUNNING", "timestamp": 2.0, "healthy": true,
                "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": format!("198.18.4.{i}")}]}]}}]
        })
    }

    /// A state whose frameworks come before its agents (Mesos writes agents first; nothing
    /// says it must), with a duplicate task and one that is not running.
    fn document() -> Value {
        let mut tasks: Vec<Value> = (1..=20)
            .map(|i| task(i, if i % 2 == 0 { "S1" } else { "S2" }))
            .collect();
        tasks.push(task(3, "S2"));
        let mut done = task(30, "S1");
        done["state"] = json!("TASK_FINISHED");
        tasks.push(done);
        json!({
            "version": "1.11.0",
            "frameworks": [
                {"id": "fw", "tasks": tasks, "pid": "scheduler-1@198.18.3.1:8080", "name": "marathon", "hostname": "m1"},
                {"id": "fw2", "name": "empty"}
            ],
            "pid": "master@198.18.0.2:5050",
            "leader": "master@198.18.0.2:5050",
            "leader_info": {"hostname": "master-1", "port": 5050},
            "slaves": [
                {"id": "S1", "pid": "slave(1)@198.18.1.1:5051", "hostname": "a1", "attributes": {"site": "azure"}},
                {"id": "S2", "pid": "slave(1)@198.18.1.2:5051", "hostname": "a2", "attributes": {"site": 7}}
            ],
            "completed_frameworks": []
        })
    }

    /// The test's chunk source: its transfer errors are I/O errors.
    type Chunks = std::vec::IntoIter<Result<Bytes, std::io::Error>>;

    fn chunks(text: &[u8], size: usize) -> Chunks {
        text.chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    async fn streamed(
        source: Chunks,
        max: usize,
    ) -> Result<Translation, ReadError<std::io::Error>> {
        let (head, t) = read(source, max, "site").await?;
        let masters = [("198.18.0.2".to_string(), 5050)];
        Ok(t.finish(&masters, head.leader.as_deref(), head.leader_info.as_ref()))
    }

    fn keyed(t: &Translation) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = t.records.iter().map(|r| (r.key(), r.to_value())).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_streamed_state_translates_as_the_whole_document_does_in_any_chunking() {
        let doc = document();
        let text = doc.to_string();
        let state: State = serde_json::from_value(doc).unwrap();
        let whole = translate(&state, &[("198.18.0.2".to_string(), 5050)], "site");
        for size in [1, 7, 4096, text.len()] {
            let t = streamed(chunks(text.as_bytes(), size), 1 << 20)
                .await
                .unwrap();
            assert_eq!(keyed(&t), keyed(&whole), "chunks of {size}");
            assert_eq!(t.duplicate_task_ids.len(), 1);
        }
        // Every task has its agent's address and its framework's name, though both came later.
        let t = streamed(chunks(text.as_bytes(), 64), 1 << 20)
            .await
            .unwrap();
        let tasks: Vec<_> = t
            .records
            .iter()
            .filter_map(|r| match r {
                crate::keys::Record::Task(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(tasks.len(), 20);
        for task in tasks {
            assert_eq!(task.framework, "marathon");
            assert!(
                task.ips
                    .iter()
                    .any(|ip| ip.source == crate::model::IpSource::Host),
                "{task:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_broken_body_is_a_clear_error() {
        let text = document().to_string();
        let bytes = text.as_bytes();
        let parse = |r: Result<Translation, ReadError<std::io::Error>>| match r {
            Err(ReadError::Body(BodyError::Parse(e))) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        };
        // Cut anywhere: in a task, between tasks, before the end.
        for cut in [1, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
            let e = parse(streamed(chunks(&bytes[..cut], 100), 1 << 20).await);
            assert!(e.contains("EOF"), "cut at {cut}: {e}");
        }
        let mut trailing = text.clone();
        trailing.push_str(" {}");
        let e = parse(streamed(chunks(trailing.as_bytes(), 100), 1 << 20).await);
        assert!(e.contains("trailing"), "{e}");
        for wrong in [
            json!([1, 2]),
            json!({"frameworks": {"not": "a list"}}),
            json!({"frameworks": [{"name": "no id"}]}),
            json!({"slaves": [{"id": "S1"}]}),
            json!({"frameworks": [{"id": "f", "name": "n", "tasks": [{"id": 5}]}]}),
        ] {
            parse(streamed(chunks(wrong.to_string().as_bytes(), 3), 1 << 20).await);
        }
        parse(streamed(chunks(b"<html>not json</html>", 5), 1 << 20).await);
        parse(streamed(chunks(b"", 5), 1 << 20).await);

        // A body that fails in transfer says so, not that it is malformed.
        let mut source: Vec<_> = chunks(&bytes[..bytes.len() / 2], 100).collect();
        source.push(Err(std::io::Error::other("connection reset")));
        match streamed(source.into_iter(), 1 << 20).await {
            Err(ReadError::Transfer(e)) => assert_eq!(e.to_string(), "connection reset"),
            other => panic!("expected a transfer error, got {other:?}"),
        }
        // Larger than allowed: stopped there, whatever the parser had read.
        match streamed(chunks(bytes, 100), bytes.len() - 1).await {
            Err(ReadError::Body(BodyError::TooLarge(max))) => assert_eq!(max, bytes.len() - 1),
            other => panic!("expected too large, got {other:?}"),
        }
    }
}
