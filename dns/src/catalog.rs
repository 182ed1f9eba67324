//! Where answers come from: every answer source (the authoritative zones, the forwarder)
//! implements `AnswerSource`, and the `Catalog` hands a request to the one whose origin is the
//! longest suffix of the name asked, as hickory-dns's `Catalog` picks a `ZoneHandler`.
//!
//! A request is decoded once, by the transport, into a `Request` that every source reads. A
//! source answers at once from memory (the zones' prepared bytes, the forwarder's cache), or
//! says it must wait on the network; the transport then runs its `answer_later` on tokio.

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::wire::{self, Body, Query, Written, MAX_NAME};

/// A query as the answer sources see it: decoded once, its name lowercased once, and what the
/// transport knows about it.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub query: Query<'a>,
    /// The question name lowercased: in the server's stack buffer, or owned.
    lower: Cow<'a, [u8]>,
    pub peer: IpAddr,
    /// The largest response the client takes: its UDP payload (at least 512), or 65,535 over TCP.
    pub limit: usize,
    /// The client may use us as a recursive resolver (the recursion ACL); answered as RA.
    pub recursion_available: bool,
    /// Which rotation of a multi-record answer this request gets.
    pub turn: usize,
    /// Where in the lowercase name the origin the catalog matched starts.
    origin_at: Option<usize>,
}

impl<'a> Request<'a> {
    pub fn new(
        query: Query<'a>,
        peer: IpAddr,
        limit: usize,
        recursion_available: bool,
        turn: usize,
    ) -> Self {
        let lower = Cow::Owned(query.qname().to_ascii_lowercase());
        Request::with_name(query, lower, peer, limit, recursion_available, turn)
    }

    /// `new`, with the name lowercased into `buffer`: what the servers do, on their stack, so
    /// that the answer path allocates nothing.
    pub fn in_buffer(
        query: Query<'a>,
        buffer: &'a mut [u8; MAX_NAME],
        peer: IpAddr,
        limit: usize,
        recursion_available: bool,
        turn: usize,
    ) -> Self {
        let n = wire::lowercase_name(query.qname(), buffer);
        let lower = Cow::Borrowed(&buffer[..n]);
        Request::with_name(query, lower, peer, limit, recursion_available, turn)
    }

    fn with_name(
        query: Query<'a>,
        lower: Cow<'a, [u8]>,
        peer: IpAddr,
        limit: usize,
        recursion_available: bool,
        turn: usize,
    ) -> Self {
        Request {
            query,
            lower,
            peer,
            limit,
            recursion_available,
            turn,
            origin_at: None,
        }
    }

    /// The question name, lowercase, in wire form.
    pub fn lower_qname(&self) -> &[u8] {
        &self.lower
    }

    /// The origin the catalog picked the source by (a suffix of `lower_qname`), once it has.
    pub fn origin(&self) -> Option<&[u8]> {
        self.origin_at.map(|at| &self.lower_qname()[at..])
    }

    /// Writes the response with `body` into `out` (see `wire::write_response`).
    pub fn respond(&self, out: &mut Vec<u8>, body: &Body<'_>) -> Written {
        wire::write_response(out, &self.query, self.recursion_available, body, self.limit)
    }

    /// A response with `rcode` and nothing but the question (and OPT).
    pub fn respond_rcode(&self, out: &mut Vec<u8>, rcode: u8) {
        let body = Body {
            rcode,
            ..Body::default()
        };
        self.respond(out, &body);
    }

    /// Notes the origin the catalog found the source by (`Found::origin_at`).
    pub fn set_origin(&mut self, at: usize) {
        self.origin_at = (at < self.lower.len()).then_some(at);
    }

    /// The request with the question copied, for a source that answers later.
    pub fn into_owned(self) -> Request<'static> {
        Request {
            query: self.query.into_owned(),
            lower: Cow::Owned(self.lower.into_owned()),
            ..self
        }
    }
}

/// What a source did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// The response is written. `prepared`: it was served from prepared bytes (the fast path).
    Now { rcode: u8, prepared: bool },
    /// The source must wait on the network: call `answer_later`.
    Later,
}

/// A future that writes a response, for sources that wait on the network.
pub type Pending<'a> = Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'a>>;

/// One source of answers for the names under its origins.
pub trait AnswerSource: Send + Sync {
    /// The origins (zone apexes) it answers for, as lowercase wire names; the root for a
    /// forwarder. Read once, when the source joins a catalog.
    fn origins(&self) -> Vec<Box<[u8]>>;

    /// A source of recursion (the forwarder) answers only clients that may recurse; the
    /// catalog refuses the others, so an agent is never an open resolver.
    fn is_recursive(&self) -> bool {
        false
    }

    /// Answers from memory into `out`, or returns `Answered::Later`.
    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered;

    /// A claim on this source's capacity for a request `answer` deferred, taken by the
    /// transport before it queues the request and held until the answer is sent, so that
    /// work waiting on the network stays bounded. A source at its cap writes the answer for
    /// that case into `out` instead and says how it answered.
    fn admit(&self, _request: &Request<'_>, _out: &mut Vec<u8>) -> Result<Admission, Answered> {
        Ok(Admission::default())
    }

    /// The response to a request that `answer` deferred (and `admit` let through).
    fn answer_later<'a>(&'a self, request: &'a Request<'a>) -> Pending<'a> {
        let mut out = Vec::new();
        request.respond_rcode(&mut out, wire::RCODE_SERVFAIL);
        Box::pin(std::future::ready(out))
    }
}

/// A source published as snapshots (the zones, rebuilt when the catalog changes) answers from
/// whichever snapshot is current.
impl<S: AnswerSource> AnswerSource for ArcSwap<S> {
    fn origins(&self) -> Vec<Box<[u8]>> {
        self.load().origins()
    }

    fn is_recursive(&self) -> bool {
        self.load().is_recursive()
    }

    fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
        self.load().answer(request, out)
    }

    fn admit(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Result<Admission, Answered> {
        self.load().admit(request, out)
    }

    fn answer_later<'a>(&'a self, request: &'a Request<'a>) -> Pending<'a> {
        let current = self.load_full();
        Box::pin(async move { current.answer_later(request).await })
    }
}

/// The answer sources by origin.
#[derive(Clone, Default)]
pub struct Catalog {
    /// Each origin once.
    origins: Vec<Origin>,
    /// Bit `n` set: some origin is `n` bytes long. Most suffixes of a name are no origin's
    /// length, and the lookup passes them over with this one test.
    lengths: [u64; 4],
}

#[derive(Clone)]
struct Origin {
    /// Lowercase wire form.
    name: Box<[u8]>,
    source: Arc<dyn AnswerSource>,
    /// `source.is_recursive()`, asked once.
    recursive: bool,
}

/// The source the catalog picked for a name.
pub struct Found<'a> {
    pub source: &'a Arc<dyn AnswerSource>,
    /// Only clients that may recurse are to be answered.
    pub recursive: bool,
    /// Where the origin starts in the name.
    pub origin_at: usize,
}

impl Catalog {
    pub fn new() -> Self {
        Catalog::default()
    }

    /// Adds `source` under each of its origins; an origin already taken goes to the newcomer.
    pub fn with(mut self, source: Arc<dyn AnswerSource>) -> Self {
        let recursive = source.is_recursive();
        for name in source.origins() {
            self.origins.retain(|o| o.name != name);
            let len = name.len().min(255);
            self.lengths[len / 64] |= 1 << (len % 64);
            let source = Arc::clone(&source);
            self.origins.push(Origin {
                name,
                source,
                recursive,
            });
        }
        self
    }

    /// The source with the longest origin that holds `lower` (a lowercase wire name).
    pub fn find(&self, lower: &[u8]) -> Option<Found<'_>> {
        let mut at = 0;
        while let Some(suffix) = lower.get(at..).filter(|s| !s.is_empty()) {
            let len = suffix.len().min(255);
            let origin = (self.lengths[len / 64] & (1 << (len % 64)) != 0)
                .then(|| self.origins.iter().find(|o| *o.name == *suffix))
                .flatten();
            if let Some(origin) = origin {
                return Some(Found {
                    source: &origin.source,
                    recursive: origin.recursive,
                    origin_at: at,
                });
            }
            at += 1 + usize::from(suffix[0]);
            if suffix[0] == 0 {
                break;
            }
        }
        None
    }
}

/// A source's claim on its own capacity for one deferred request (`AnswerSource::admit`);
/// the capacity is given back when it is dropped. The default claims nothing.
#[derive(Debug, Default)]
pub struct Admission {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl From<tokio::sync::OwnedSemaphorePermit> for Admission {
    fn from(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Admission {
            _permit: Some(permit),
        }
    }
}

impl Catalog {
    /// The response to a question (`lower`: a lowercase wire name) from the catalog's own
    /// sources, never one that recurses, as a client on this host over TCP would get it: what
    /// renamed zones and the HTTP APIs ask. An rcode when no source can answer it now.
    pub fn answer_locally(
        &self,
        lower: &[u8],
        qtype: u16,
        qclass: u16,
        id: u16,
        turn: usize,
    ) -> Result<Vec<u8>, u8> {
        let mut question = Vec::with_capacity(lower.len() + 4);
        question.extend_from_slice(lower);
        question.extend_from_slice(&qtype.to_be_bytes());
        question.extend_from_slice(&qclass.to_be_bytes());
        let query = Query {
            id,
            rd: false,
            cd: false,
            question: Cow::Owned(question),
            qtype,
            qclass,
            edns: None,
        };
        let localhost = IpAddr::from([127, 0, 0, 1]);
        let mut request = Request::new(query, localhost, wire::MAX_MESSAGE, false, turn);
        let found = self
            .find(request.lower_qname())
            .ok_or(wire::RCODE_REFUSED)?;
        if found.recursive {
            return Err(wire::RCODE_REFUSED);
        }
        request.set_origin(found.origin_at);
        let mut out = Vec::new();
        match found.source.answer(&request, &mut out) {
            Answered::Now { .. } => Ok(out),
            Answered::Later => Err(wire::RCODE_SERVFAIL),
        }
    }
}

/// A request a source will answer later, with the source and its admission: what a
/// transport runs on tokio.
pub struct Deferred {
    source: Arc<dyn AnswerSource>,
    request: Box<Request<'static>>,
    admission: Admission,
}

impl Deferred {
    pub fn new(
        source: Arc<dyn AnswerSource>,
        request: Request<'static>,
        admission: Admission,
    ) -> Self {
        Deferred {
            source,
            request: Box::new(request),
            admission,
        }
    }

    /// The response; the admission is held until it is written.
    pub async fn resolve(self) -> Vec<u8> {
        let response = self.source.answer_later(&self.request).await;
        drop(self.admission);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every name with its own rcode, to show which source got it.
    struct Fixed {
        origin: &'static str,
        rcode: u8,
        recursive: bool,
    }

    impl AnswerSource for Fixed {
        fn origins(&self) -> Vec<Box<[u8]>> {
            vec![wire::name_to_wire(self.origin).unwrap().into()]
        }

        fn is_recursive(&self) -> bool {
            self.recursive
        }

        fn answer(&self, request: &Request<'_>, out: &mut Vec<u8>) -> Answered {
            request.respond_rcode(out, self.rcode);
            Answered::Now {
                rcode: self.rcode,
                prepared: false,
            }
        }
    }

    fn source(origin: &'static str, rcode: u8) -> Arc<dyn AnswerSource> {
        Arc::new(Fixed {
            origin,
            rcode,
            recursive: origin == ".",
        })
    }

    fn find(catalog: &Catalog, name: &str) -> Option<u8> {
        let wire = wire::name_to_wire(name).unwrap();
        let source = catalog.find(&wire)?.source;
        let query = Query {
            id: 1,
            rd: true,
            cd: false,
            question: wire.iter().copied().chain([0, 1, 0, 1]).collect(),
            qtype: wire::TYPE_A,
            qclass: wire::CLASS_IN,
            edns: None,
        };
        let request = Request::new(query, IpAddr::from([127, 0, 0, 1]), 512, true, 0);
        match source.answer(&request, &mut Vec::new()) {
            Answered::Now { rcode, .. } => Some(rcode),
            Answered::Later => None,
        }
    }

    #[test]
    fn the_longest_origin_wins_and_the_root_takes_the_rest() {
        let catalog = Catalog::new()
            .with(source(".", 1))
            .with(source("mesos.", 2))
            .with(source("l4lb.thisdcos.directory.", 3))
            .with(source("thisdcos.directory.", 4));
        assert_eq!(find(&catalog, "web.marathon.mesos."), Some(2));
        assert_eq!(find(&catalog, "mesos."), Some(2));
        assert_eq!(find(&catalog, "amesos."), Some(1));
        assert_eq!(find(&catalog, "a.l4lb.thisdcos.directory."), Some(3));
        assert_eq!(find(&catalog, "a.autoip.thisdcos.directory."), Some(4));
        assert_eq!(find(&catalog, "example.org."), Some(1));
        assert_eq!(find(&catalog, "."), Some(1));
        assert!(catalog.find(b"\x05mesos\x00").is_some_and(|f| !f.recursive));
        assert!(catalog.find(b"\x03org\x00").is_some_and(|f| f.recursive));
        // Without a root, other names have no source.
        let zones_only = Catalog::new().with(source("mesos.", 2));
        assert_eq!(find(&zones_only, "example.org."), None);
        // A later source takes over an origin.
        let replaced = zones_only.with(source("mesos.", 5));
        assert_eq!(find(&replaced, "a.mesos."), Some(5));
    }
}
