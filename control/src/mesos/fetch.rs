//! Reading `GET /master/state` the way Mesos-DNS does: the masters in order, then the leader
//! the state names if that is another master; with timeouts, a body size limit, optional
//! basic auth and TLS.

use std::time::Duration;

use reqwest::StatusCode;

use crate::error::joined;
use crate::mesos::state::parse_pid;
use crate::mesos::stream::{self, BodyError, Head, ReadError};
use crate::mesos::translate::{Translation, Translator};

/// Why a poll of the masters failed. The catalog is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every master failed: each one's own failure, in the order asked.
    #[error("no master answered: {}", joined(.0.iter().map(FetchError::as_item)))]
    NoMaster(Vec<FetchError>),
    /// A master could not be asked, or its answer could not be read.
    #[error("no master answered: {0}")]
    Unreachable(#[source] MasterFailure),
    #[error("master {url}: the state names no leader")]
    NoLeader { url: String },
    #[error("master {url}: {problem}")]
    Bad {
        url: String,
        #[source]
        problem: BadState,
    },
}

/// What is wrong with a state a master answered.
#[derive(Debug, thiserror::Error)]
pub enum BadState {
    #[error("unparseable leader {0:?}")]
    UnparseableLeader(String),
    #[error("the named leader does not say it leads")]
    LeaderDoesNotLead,
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// Why asking one master over HTTP failed, for a poll and a subscription alike.
#[derive(Debug, thiserror::Error)]
pub enum MasterRequestError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request, or reading its answer, failed: shown with every cause, since reqwest's own
    /// message ("error sending request") does not say why.
    #[error("{}", error_chain(.0))]
    Http(#[source] reqwest::Error),
    /// A status that is neither success nor one the caller handles; the start of the body when
    /// it was read.
    #[error("HTTP {status}{}", .body.as_ref().map(|b| format!(" {b}")).unwrap_or_default())]
    Status {
        status: StatusCode,
        body: Option<String>,
    },
    #[error("HTTP {status} without a Location")]
    NoLocation { status: StatusCode },
    #[error("more than {max} redirects ({location})")]
    TooManyRedirects { max: usize, location: String },
}

/// How much of an error status's body is kept.
const STATUS_BODY_CHARS: usize = 200;

impl MasterRequestError {
    /// An error status with the first characters of its body (none when it is blank).
    pub fn status(status: StatusCode, body: &str) -> Self {
        let body: String = body.trim().chars().take(STATUS_BODY_CHARS).collect();
        let body = body.trim_end();
        MasterRequestError::Status {
            status,
            body: (!body.is_empty()).then(|| body.to_string()),
        }
    }
}

/// One master's failure: the URL asked and why.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {error}")]
pub struct MasterFailure {
    pub url: String,
    #[source]
    pub error: MasterRequestError,
}

/// Why a client of the masters cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum MasterClientError {
    #[error("bad CA certificate: {source}")]
    CaCertificate {
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client: {source}")]
    Build {
        #[source]
        source: reqwest::Error,
    },
    #[error("no master given")]
    NoMaster,
}

impl FetchError {
    /// How it reads in the list of every master's failure, under that list's own heading.
    fn as_item(&self) -> &dyn std::fmt::Display {
        match self {
            FetchError::Unreachable(failure) => failure,
            other => other,
        }
    }

    /// A short label for the metric.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::NoMaster(_) | FetchError::Unreachable(_) => "unreachable",
            FetchError::NoLeader { .. } => "no_leader",
            FetchError::Bad { .. } => "bad_state",
        }
    }
}

#[derive(Clone)]
pub struct MasterClient {
    pub(crate) http: reqwest::Client,
    /// For the event stream: the same, but without a deadline for the whole response (a
    /// subscription lasts as long as the master leads); silence is caught by the heartbeats.
    pub(crate) stream: reqwest::Client,
    pub(crate) masters: Vec<String>,
    /// Basic auth: user and password.
    pub(crate) auth: Option<(String, String)>,
    pub(crate) max_body: usize,
    pub(crate) scheme: &'static str,
    pub(crate) timeout: Duration,
}

/// Names the user, never the password: a client printed in a log or a panic message must not
/// hand out the masters' credentials.
impl std::fmt::Debug for MasterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterClient")
            .field("masters", &self.masters)
            .field("user", &self.auth.as_ref().map(|(user, _)| user))
            .field("password", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl MasterClient {
    /// `req` with the masters' basic auth, when one is configured.
    pub(crate) fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, pass)) => req.basic_auth(user, Some(pass)),
            None => req,
        }
    }

    /// `masters` are base URLs (`http://198.18.0.1:5050`); a missing scheme means http.
    pub fn new(
        masters: &[String],
        timeout: Duration,
        auth: Option<(String, String)>,
        ca_cert: Option<&[u8]>,
        max_body: usize,
    ) -> Result<Self, MasterClientError> {
        let client = |whole_response: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none());
            if let Some(t) = whole_response {
                builder = builder.timeout(t);
            }
            if let Some(pem) = ca_cert {
                let cert = reqwest::Certificate::from_pem(pem)
                    .map_err(|source| MasterClientError::CaCertificate { source })?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build()
                .map_err(|source| MasterClientError::Build { source })
        };
        let (http, stream) = (client(Some(timeout))?, client(None)?);
        let masters: Vec<String> = masters
            .iter()
            .map(|m| {
                let m = m.trim().trim_end_matches('/');
                if m.contains("://") {
                    m.to_string()
                } else {
                    format!("http://{m}")
                }
            })
            .collect();
        if masters.is_empty() {
            return Err(MasterClientError::NoMaster);
        }
        let scheme = if masters[0].starts_with("https://") {
            "https"
        } else {
            "http"
        };
        Ok(MasterClient {
            http,
            stream,
            masters,
            auth,
            max_body,
            scheme,
            timeout,
        })
    }

    /// The configured masters as (host, port), for the catalog's master list.
    pub fn master_addresses(&self) -> Vec<(String, u16)> {
        self.masters
            .iter()
            .filter_map(|m| {
                let rest = m.split_once("://").map_or(m.as_str(), |(_, r)| r);
                let hostport = rest.split('/').next()?;
                let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5050"));
                Some((
                    host.trim_matches(|c| c == '[' || c == ']').to_string(),
                    port.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The leading master's catalog: each master in order until one answers with a state
    /// that names a leader; from the leader itself when that is another master. The state is
    /// translated as it streams in (`site_attribute` names an agent's site).
    pub async fn fetch(&self, site_attribute: &str) -> Result<Translation, FetchError> {
        let mut errors = Vec::new();
        for url in &self.masters {
            match self.fetch_via(url, site_attribute).await {
                Ok(t) => return Ok(t),
                Err(e) => errors.push(e),
            }
        }
        if errors.len() == 1 {
            return Err(errors.remove(0));
        }
        Err(FetchError::NoMaster(errors))
    }

    async fn fetch_via(&self, url: &str, site_attribute: &str) -> Result<Translation, FetchError> {
        let (head, translator) = self.get(url, site_attribute).await?;
        let Some(leader) = head.leader.as_deref().filter(|l| !l.is_empty()) else {
            return Err(FetchError::NoLeader {
                url: url.to_string(),
            });
        };
        if head.pid.as_deref() == Some(leader) {
            return Ok(self.finish(head, translator));
        }
        drop(translator);
        // Another master leads: ask it, as Mesos-DNS does.
        let Some((host, port)) = parse_pid(leader) else {
            return Err(FetchError::Bad {
                url: url.to_string(),
                problem: BadState::UnparseableLeader(leader.to_string()),
            });
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let leader_url = format!("{}://{host}:{port}", self.scheme);
        let (head, translator) = self.get(&leader_url, site_attribute).await?;
        match head.leader.as_deref() {
            Some(l) if head.pid.as_deref() == Some(l) => Ok(self.finish(head, translator)),
            _ => Err(FetchError::Bad {
                url: leader_url,
                problem: BadState::LeaderDoesNotLead,
            }),
        }
    }

    fn finish(&self, head: Head, translator: Translator) -> Translation {
        translator.finish(
            &self.master_addresses(),
            head.leader.as_deref(),
            head.leader_info.as_ref(),
        )
    }

    async fn get(
        &self,
        base: &str,
        site_attribute: &str,
    ) -> Result<(Head, Translator), FetchError> {
        let url = format!("{base}/master/state");
        let unreachable = |error| {
            FetchError::Unreachable(MasterFailure {
                url: url.clone(),
                error,
            })
        };
        let bad = |problem| FetchError::Bad {
            url: url.clone(),
            problem,
        };
        let resp = self
            .authed(self.http.get(&url))
            .send()
            .await
            .map_err(|e| unreachable(MasterRequestError::Http(e)))?;
        if !resp.status().is_success() {
            return Err(unreachable(MasterRequestError::Status {
                status: resp.status(),
                body: None,
            }));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > self.max_body)
        {
            return Err(bad(BodyError::TooLarge(self.max_body).into()));
        }
        stream::read(resp, self.max_body, site_attribute)
            .await
            .map_err(|e| match e {
                ReadError::Transfer(e) => unreachable(MasterRequestError::Http(e)),
                ReadError::Body(e) => bad(e.into()),
            })
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::error::Error as _;

    /// A real reqwest error: a request to a loopback port nobody listens on.
    pub(crate) async fn refused() -> reqwest::Error {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err()
    }

    #[test]
    fn an_error_status_shows_the_start_of_its_body_trimmed() {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let shown = |body: &str| MasterRequestError::status(status, body).to_string();
        assert_eq!(shown(""), "HTTP 503 Service Unavailable");
        assert_eq!(shown(" \n\t"), "HTTP 503 Service Unavailable");
        assert_eq!(
            shown("  no leader elected\n"),
            "HTTP 503 Service Unavailable no leader elected"
        );
        // The first 200 characters, and not the blank they may end in.
        let long = format!("{}   {}", "x".repeat(197), "y".repeat(50));
        assert_eq!(
            shown(&long),
            format!("HTTP 503 Service Unavailable {}", "x".repeat(197))
        );
        let wide = "é".repeat(300);
        assert_eq!(
            shown(&wide),
            format!("HTTP 503 Service Unavailable {}", "é".repeat(200))
        );
        let unread = MasterRequestError::Status {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: None,
        };
        assert_eq!(unread.to_string(), "HTTP 500 Internal Server Error");
    }

    #[tokio::test]
    async fn a_failed_request_shows_every_cause_and_keeps_the_reqwest_error() {
        let error = refused().await;
        let chain = error_chain(&error);
        assert!(chain.contains("Connection refused"), "{chain}");
        let failure = FetchError::Unreachable(MasterFailure {
            url: "http://127.0.0.1:1/master/state".into(),
            error: MasterRequestError::Http(error),
        });
        assert_eq!(
            failure.to_string(),
            format!("no master answered: http://127.0.0.1:1/master/state: {chain}")
        );
        assert_eq!(failure.kind(), "unreachable");
        let request = failure.source().and_then(|f| f.source()).unwrap();
        assert!(request.downcast_ref::<MasterRequestError>().is_some());
        assert!(request.source().unwrap().is::<reqwest::Error>());
    }

    #[test]
    fn every_master_failing_lists_each_failure_in_order() {
        let unreachable = FetchError::Unreachable(MasterFailure {
            url: "http://198.18.0.1:5050/master/state".into(),
            error: MasterRequestError::Timeout(Duration::from_secs(2)),
        });
        let no_leader = FetchError::NoLeader {
            url: "http://198.18.0.2:5050".into(),
        };
        let bad = FetchError::Bad {
            url: "http://198.18.0.3:5050".into(),
            problem: BadState::UnparseableLeader("master@?".into()),
        };
        assert_eq!((no_leader.kind(), bad.kind()), ("no_leader", "bad_state"));
        let all = FetchError::NoMaster(vec![unreachable, no_leader, bad]);
        assert_eq!(
            all.to_string(),
            "no master answered: \
             http://198.18.0.1:5050/master/state: no answer within 2s; \
             master http://198.18.0.2:5050: the state names no leader; \
             master http://198.18.0.3:5050: unparseable leader \"master@?\""
        );
        assert_eq!(all.kind(), "unreachable");
    }

    #[test]
    fn a_state_that_is_not_json_keeps_the_parser_error() {
        let e = serde_json::from_str::<serde_json::Value>("<html>").unwrap_err();
        let text = e.to_string();
        let bad = FetchError::Bad {
            url: "http://198.18.0.1:5050/master/state".into(),
            problem: BodyError::Parse(e).into(),
        };
        assert_eq!(
            bad.to_string(),
            format!(
                "master http://198.18.0.1:5050/master/state: not a Mesos state document: {text}"
            )
        );
        let parser = bad.source().and_then(|p| p.source()).unwrap();
        assert!(parser.is::<serde_json::Error>());
    }

    #[test]
    fn debug_names_the_user_and_hides_the_password() {
        let client = MasterClient::new(
            &["http://198.18.0.1:5050".to_string()],
            Duration::from_secs(1),
            Some(("lodestar".into(), "s3cret-master-pw".into())),
            None,
            1 << 20,
        )
        .unwrap();
        for text in [format!("{client:?}"), format!("{client:#?}")] {
            assert!(!text.contains("s3cret-master-pw"), "{text}");
            assert!(
                text.contains("\"lodestar\"") && text.contains("<redacted>"),
                "{text}"
            );
        }
        let anonymous = MasterClient::new(
            &["198.18.0.1:5050".to_string()],
            Duration::from_secs(1),
            None,
            None,
            1 << 20,
        )
        .unwrap();
        assert!(format!("{anonymous:?}").contains("password: None"));
    }
}
