//! DNS label rules as Mesos-DNS applies them (`records/labels`): RFC 1123 or RFC 952 label
//! sanitising, label-by-label domain fragments, and the canonical task name's hash and suffix.

use sha1::{Digest, Sha1};

/// How task, framework and port names become DNS labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSpec {
    /// At most 63 characters; leading and trailing `-` trimmed (Mesos-DNS's default).
    #[default]
    Rfc1123,
    /// At most 24 characters; must start with a letter.
    Rfc952,
}

impl LabelSpec {
    /// One label: lowercase; `-`, `.` and `_` become `-`; anything else is dropped.
    pub fn label(self, name: &str) -> String {
        let mapped: Vec<u8> = name
            .bytes()
            .filter_map(|b| match b {
                b'A'..=b'Z' => Some(b.to_ascii_lowercase()),
                b'a'..=b'z' | b'0'..=b'9' => Some(b),
                b'-' | b'.' | b'_' => Some(b'-'),
                _ => None,
            })
            .collect();
        let (maxlen, left): (usize, &[u8]) = match self {
            LabelSpec::Rfc1123 => (63, b"-"),
            LabelSpec::Rfc952 => (24, b"-0123456789"),
        };
        let out = trim_cut(&mapped, maxlen, left, b"-");
        // Only ASCII bytes survive the mapping.
        String::from_utf8(out).unwrap_or_default()
    }

    /// A dotted name sanitised label by label, empty labels dropped: `Marathon.Prod` ->
    /// `marathon.prod` (Mesos-DNS's `DomainFrag`, used for framework names).
    pub fn domain_frag(self, name: &str) -> String {
        name.split('.')
            .map(|part| self.label(part))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Mesos-DNS's `trimCut`: trim `left` from the start, cut to `maxlen`, trim `right` from the
/// end, then refill from what followed the cut (its leading `right` trimmed) up to the cut size.
fn trim_cut(label: &[u8], maxlen: usize, left: &[u8], right: &[u8]) -> Vec<u8> {
    let start = label
        .iter()
        .position(|b| !left.contains(b))
        .unwrap_or(label.len());
    let trim = &label[start..];
    let size = trim.len().min(maxlen);
    let mut head = trim[..size].to_vec();
    while head.last().is_some_and(|b| right.contains(b)) {
        head.pop();
    }
    if head.len() == size {
        return head;
    }
    let rest = &trim[size..];
    let skip = rest
        .iter()
        .position(|b| !right.contains(b))
        .unwrap_or(rest.len());
    let tail = &rest[skip..];
    let room = size - head.len();
    head.extend_from_slice(&tail[..tail.len().min(room)]);
    head
}

/// A name as a lowercase FQDN with one trailing dot, the form the zones and the HTTP API use.
pub fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// The `<h>` of a canonical task name: the first 5 characters of zbase32(sha1(task id)).
pub fn task_hash(task_id: &str) -> String {
    let digest = Sha1::digest(task_id.as_bytes());
    // 5 characters x 5 bits = the first 25 bits of the digest, most significant first.
    let bits = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (0..5)
        .map(|i| ZBASE32[((bits >> (27 - 5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// The `<s>` of a canonical task name: the last `-`-separated field of the agent id, lowercased.
pub fn agent_id_tail(agent_id: &str) -> String {
    agent_id
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_dns_label_vectors() {
        let r952 = LabelSpec::Rfc952;
        let r1123 = LabelSpec::Rfc1123;
        assert_eq!(r952.label("4abc123"), "abc123");
        assert_eq!(
            r952.label("fd%gsf---gs7-f$gs--d7fddg-123"),
            "fdgsf---gs7-fgs--d7fddg1"
        );
        assert_eq!(
            r952.label("chronos with a space AND MIXED CASE-2.0.1"),
            "chronoswithaspaceandmixe"
        );
        assert_eq!(r1123.label("-4abc123"), "4abc123");
        let long = format!("hello{}f", "-".repeat(58));
        assert_eq!(r1123.label(&long), "hellof");
        for spec in [r952, r1123] {
            assert_eq!(spec.label("a.b.c.d.e"), "a-b-c-d-e");
            assert_eq!(spec.label("---a---b"), "a---b");
        }
        assert_eq!(
            r1123.domain_frag("pod_123$abc.marathon-0.6.0-dev.mesos"),
            "pod-123abc.marathon-0.6.0-dev.mesos"
        );
        assert_eq!(
            r952.domain_frag("pod_123$abc.marathon-0.6.0-dev.mesos"),
            "pod-123abc.marathon-0.dev.mesos"
        );
        assert_eq!(r1123.domain_frag("a..c"), "a.c");
        assert_eq!(r1123.domain_frag("(@ host . com"), "host.com");
        assert_eq!(r1123.domain_frag("MiXeDcase.CoM"), "mixedcase.com");
    }

    #[test]
    fn labels_are_at_most_63_and_never_panic_on_unicode() {
        let name = "Ünïcødé_".repeat(40);
        let l = LabelSpec::Rfc1123.label(&name);
        assert!(l.len() <= 63, "{l}");
        assert!(l
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert_eq!(LabelSpec::Rfc1123.label("$$$"), "");
        assert_eq!(LabelSpec::Rfc952.label("1234"), "");
    }

    #[test]
    fn canonical_name_parts() {
        assert_eq!(task_hash("test"), "iffe9");
        assert_eq!(
            agent_id_tail("20150925-143318-1660156426-5050-2036-S3"),
            "s3"
        );
        assert_eq!(agent_id_tail("plain"), "plain");
    }
}
