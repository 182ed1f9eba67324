//! Subscribing to the leading master's event stream: `POST /api/v1` with
//! `{"type": "SUBSCRIBE"}`, answered by a chunked RecordIO stream of JSON events that lasts as
//! long as that master leads. A master that does not lead answers 307 to the leader (with a
//! protocol-relative `Location`); one that knows no leader answers 503.

use std::time::Duration;

use crate::error::joined;
use crate::mesos::fetch::{error_chain, MasterClient, MasterFailure, MasterRequestError};
use crate::mesos::operator::{parse_event, Event, EventError};
use crate::mesos::recordio::{Decoder, RecordIoError};
use crate::mesos::state::State;

/// Why no subscription could be made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// Some master failed (`failures`, in the order asked; never empty), and the others have
    /// no operator API.
    #[error("no master accepted the subscription: {}", refusals(.failures, .no_api))]
    NoMaster {
        failures: Vec<MasterFailure>,
        no_api: Vec<NoOperatorApi>,
    },
    /// Every master has no operator API (the first one's answer).
    #[error(transparent)]
    NoOperatorApi(#[from] NoOperatorApi),
}

/// The master answers `/api/v1` with "not found" or "not implemented": a Mesos older than
/// 1.1, or a proxy that passes only `/master/state`.
#[derive(Debug, thiserror::Error)]
#[error("master {url} has no operator API (HTTP {status})")]
pub struct NoOperatorApi {
    pub url: String,
    pub status: u16,
}

/// Why a subscription ended. Every one of them means: subscribe again.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{url}: the master closed the stream")]
    Closed { url: String },
    #[error("{url}: {}", error_chain(.source))]
    Read {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: {source}")]
    Framing {
        url: String,
        #[source]
        source: RecordIoError,
    },
    #[error("{url}: {source}")]
    Event {
        url: String,
        #[source]
        source: EventError,
    },
    #[error("{url}: nothing received for {silent:?}, heartbeats are due every {interval:?}")]
    Silent {
        url: String,
        silent: Duration,
        interval: Duration,
    },
    #[error("{url}: the first event is {kind}, not SUBSCRIBED")]
    NotSubscribed { url: String, kind: String },
}

/// The failures, then the masters without an operator API, in one line.
fn refusals(failures: &[MasterFailure], no_api: &[NoOperatorApi]) -> String {
    let failures = failures.iter().map(ToString::to_string);
    joined(failures.chain(no_api.iter().map(ToString::to_string)))
}

impl StreamError {
    /// A short label for the metric.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamError::Closed { .. } => "closed",
            StreamError::Read { .. } => "read",
            StreamError::Framing { .. } => "framing",
            StreamError::Event { .. } => "bad_event",
            StreamError::Silent { .. } => "silent",
            StreamError::NotSubscribed { .. } => "not_subscribed",
        }
    }
}

/// The master's default heartbeat interval (`DEFAULT_HEARTBEAT_INTERVAL`), for a master that
/// does not announce one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Redirects followed from one configured master (a follower names the leader: one hop).
const MAX_REDIRECTS: usize = 3;

/// How many heartbeats may be missed before the stream counts as lost (dcos-net waits 3).
pub const MISSED_HEARTBEATS: u32 = 3;

/// A live subscription.
pub struct Subscription {
    url: String,
    response: reqwest::Response,
    decoder: Decoder,
    /// How long the stream may be silent; set from `SUBSCRIBED`.
    patience: Duration,
    interval: Duration,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("url", &self.url)
            .field("patience", &self.patience)
            .finish_non_exhaustive()
    }
}

impl MasterClient {
    /// Subscribes at the leading master: each configured master in order, following its
    /// redirect to the leader.
    pub async fn subscribe(&self) -> Result<Subscription, SubscribeError> {
        let mut failures = Vec::new();
        let mut no_api = Vec::new();
        for base in &self.masters {
            let mut url = format!("{base}/api/v1");
            // A master that does not lead names the leader; the leader streams.
            let mut hops = 0;
            loop {
                match self.subscribe_at(&url).await {
                    Ok(Answer::Stream(response)) => {
                        return Ok(Subscription {
                            url,
                            response,
                            // SUBSCRIBED carries the whole state: as large as a state may be.
                            decoder: Decoder::new(self.max_body),
                            patience: DEFAULT_HEARTBEAT * MISSED_HEARTBEATS,
                            interval: DEFAULT_HEARTBEAT,
                        });
                    }
                    Ok(Answer::Redirect(to)) if hops < MAX_REDIRECTS => {
                        hops += 1;
                        url = self.resolve(&url, &to);
                    }
                    Ok(Answer::Redirect(location)) => {
                        let error = MasterRequestError::TooManyRedirects {
                            max: MAX_REDIRECTS,
                            location,
                        };
                        failures.push(MasterFailure { url, error });
                        break;
                    }
                    Ok(Answer::NoApi(status)) => {
                        no_api.push(NoOperatorApi { url, status });
                        break;
                    }
                    Err(error) => {
                        failures.push(MasterFailure { url, error });
                        break;
                    }
                }
            }
        }
        // Polling only when every master says it has no operator API: one that is down or
        // electing (503) may have it, and is asked again on the next attempt.
        if failures.is_empty() && !no_api.is_empty() {
            return Err(no_api.remove(0).into());
        }
        Err(SubscribeError::NoMaster { failures, no_api })
    }

    async fn subscribe_at(&self, url: &str) -> Result<Answer, MasterRequestError> {
        let req = self.authed(
            self.stream
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json")
                .body(r#"{"type":"SUBSCRIBE"}"#),
        );
        let response = tokio::time::timeout(self.timeout, req.send())
            .await
            .map_err(|_| MasterRequestError::Timeout(self.timeout))?
            .map_err(MasterRequestError::Http)?;
        let status = response.status();
        if status.is_success() {
            return Ok(Answer::Stream(response));
        }
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or(MasterRequestError::NoLocation { status })?;
            return Ok(Answer::Redirect(to.to_string()));
        }
        if matches!(status.as_u16(), 404 | 405 | 501) {
            return Ok(Answer::NoApi(status.as_u16()));
        }
        let body = tokio::time::timeout(self.timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(MasterRequestError::status(status, &body))
    }

    /// A `Location` against the URL that answered: the master writes a protocol-relative one
    /// (`//leader:5050/api/v1`), which keeps the scheme in use.
    fn resolve(&self, from: &str, location: &str) -> String {
        if location.contains("://") {
            location.to_string()
        } else if let Some(rest) = location.strip_prefix("//") {
            format!("{}://{rest}", self.scheme)
        } else {
            let origin = from
                .split_once("://")
                .map(|(scheme, rest)| {
                    let host = rest.split('/').next().unwrap_or(rest);
                    format!("{scheme}://{host}")
                })
                .unwrap_or_default();
            format!("{origin}/{}", location.trim_start_matches('/'))
        }
    }
}

enum Answer {
    Stream(reqwest::Response),
    Redirect(String),
    NoApi(u16),
}

impl Subscription {
    /// The URL streaming (the leader's).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The leader as a pid (`master@ip:port`), as `/master/state` names it: the master that
    /// streams, its host name resolved (a redirect names `MasterInfo.hostname`), port 5050 when
    /// the URL gives none. `None` when it does not resolve.
    pub async fn leader_pid(&self) -> Option<String> {
        let rest = self.url.split_once("://")?.1;
        let hostport = rest.split('/').next()?;
        let has_port = hostport
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.ends_with(':') && port.parse::<u16>().is_ok());
        let target = if has_port {
            hostport.to_string()
        } else {
            format!("{hostport}:5050")
        };
        let addr = tokio::net::lookup_host(target.as_str())
            .await
            .ok()?
            .next()?;
        Some(format!("master@{addr}"))
    }

    /// The first event, which must be `SUBSCRIBED`: the whole state. Its heartbeat interval
    /// sets how long the stream may be silent from then on.
    pub async fn subscribed(&mut self) -> Result<State, StreamError> {
        match self.next().await? {
            Event::Subscribed { state, heartbeat } => {
                self.interval = heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
                self.patience = self.interval * MISSED_HEARTBEATS;
                Ok(state)
            }
            other => Err(StreamError::NotSubscribed {
                url: self.url.clone(),
                kind: other.kind().to_string(),
            }),
        }
    }

    /// The heartbeat interval the master announced.
    pub fn heartbeat(&self) -> Duration {
        self.interval
    }

    /// The next event. Silence longer than the heartbeats allow, a cut or garbled stream, or
    /// an event that is not the operator API's end the subscription.
    pub async fn next(&mut self) -> Result<Event, StreamError> {
        loop {
            let record = self
                .decoder
                .next_record()
                .map_err(|source| StreamError::Framing {
                    url: self.url.clone(),
                    source,
                })?;
            if let Some(record) = record {
                return parse_event(&record).map_err(|source| StreamError::Event {
                    url: self.url.clone(),
                    source,
                });
            }
            let chunk = tokio::time::timeout(self.patience, self.response.chunk())
                .await
                .map_err(|_| StreamError::Silent {
                    url: self.url.clone(),
                    silent: self.patience,
                    interval: self.interval,
                })?
                .map_err(|source| StreamError::Read {
                    url: self.url.clone(),
                    source,
                })?;
            match chunk {
                Some(bytes) => self.decoder.push(&bytes),
                None => {
                    self.decoder
                        .finish()
                        .map_err(|source| StreamError::Framing {
                            url: self.url.clone(),
                            source,
                        })?;
                    return Err(StreamError::Closed {
                        url: self.url.clone(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::mesos::fetch::tests::refused;

    #[test]
    fn no_master_lists_the_failures_then_the_masters_without_the_api() {
        let e = SubscribeError::NoMaster {
            failures: vec![
                MasterFailure {
                    url: "http://198.18.0.1:5050/api/v1".into(),
                    error: MasterRequestError::status(reqwest::StatusCode::SERVICE_UNAVAILABLE, ""),
                },
                MasterFailure {
                    url: "http://198.18.0.3:5050/api/v1".into(),
                    error: MasterRequestError::TooManyRedirects {
                        max: MAX_REDIRECTS,
                        location: "//198.18.0.4:5050/api/v1".into(),
                    },
                },
                MasterFailure {
                    url: "http://198.18.0.5:5050/api/v1".into(),
                    error: MasterRequestError::NoLocation {
                        status: reqwest::StatusCode::TEMPORARY_REDIRECT,
                    },
                },
            ],
            no_api: vec![NoOperatorApi {
                url: "http://198.18.0.2:5050/api/v1".into(),
                status: 404,
            }],
        };
        assert_eq!(
            e.to_string(),
            "no master accepted the subscription: \
             http://198.18.0.1:5050/api/v1: HTTP 503 Service Unavailable; \
             http://198.18.0.3:5050/api/v1: more than 3 redirects (//198.18.0.4:5050/api/v1); \
             http://198.18.0.5:5050/api/v1: HTTP 307 Temporary Redirect without a Location; \
             master http://198.18.0.2:5050/api/v1 has no operator API (HTTP 404)"
        );
        let only = SubscribeError::from(NoOperatorApi {
            url: "http://198.18.0.2:5050/api/v1".into(),
            status: 501,
        });
        assert_eq!(
            only.to_string(),
            "master http://198.18.0.2:5050/api/v1 has no operator API (HTTP 501)"
        );
    }

    #[tokio::test]
    async fn a_cut_stream_shows_every_cause_and_keeps_the_reqwest_error() {
        let source = refused().await;
        let chain = error_chain(&source);
        let e = StreamError::Read {
            url: "http://198.18.0.1:5050/api/v1".into(),
            source,
        };
        assert_eq!(
            e.to_string(),
            format!("http://198.18.0.1:5050/api/v1: {chain}")
        );
        assert_eq!(e.kind(), "read");
        assert!(e.source().unwrap().is::<reqwest::Error>());
    }
}
