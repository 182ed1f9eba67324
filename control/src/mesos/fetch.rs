//! Reading `GET /master/state` the way Mesos-DNS does: the masters in order, then the leader
//! the state names if that is another master; with timeouts, a body size limit, optional
//! basic auth and TLS.

use std::time::Duration;

use crate::mesos::state::parse_pid;
use crate::mesos::stream::{self, Head, ReadError};
use crate::mesos::translate::{Translation, Translator};

/// Why a poll of the masters failed. The catalog is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no master answered: {}", .0.join("; "))]
    NoMaster(Vec<String>),
    #[error("master {url}: the state names no leader")]
    NoLeader { url: String },
    #[error("master {url}: {reason}")]
    Bad { url: String, reason: String },
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
    /// A short label for the metric.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::NoMaster(_) => "unreachable",
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
        Err(FetchError::NoMaster(
            errors.iter().map(ToString::to_string).collect(),
        ))
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
                reason: format!("unparseable leader {leader:?}"),
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
                reason: "the named leader does not say it leads".into(),
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
        let unreachable = |reason: String| FetchError::NoMaster(vec![format!("{url}: {reason}")]);
        let mut req = self.http.get(&url);
        if let Some((user, pass)) = &self.auth {
            req = req.basic_auth(user, Some(pass));
        }
        let resp = req.send().await.map_err(|e| unreachable(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(unreachable(format!("HTTP {}", resp.status())));
        }
        let too_large = |max: usize| FetchError::Bad {
            url: url.clone(),
            reason: format!("body larger than {max} bytes"),
        };
        if resp
            .content_length()
            .is_some_and(|n| n as usize > self.max_body)
        {
            return Err(too_large(self.max_body));
        }
        stream::read(resp, self.max_body, site_attribute)
            .await
            .map_err(|e| match e {
                ReadError::Transfer(reason) => unreachable(reason),
                ReadError::TooLarge(max) => too_large(max),
                ReadError::Parse(e) => FetchError::Bad {
                    url: url.clone(),
                    reason: format!("not a Mesos state document: {e}"),
                },
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
mod tests {
    use super::*;

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
