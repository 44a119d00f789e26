//! `[cluster]`: the NATS JetStream servers that carry every host's events and claims
//! (`docs/scale-out.md`).
//!
//! Owns the table as written (`RawCluster`) and validated ([`Cluster`]). Like `[server]`, it is
//! shared by every pipeline of a workspace and read from the workspace file only (a pipeline
//! file with `[cluster]` is refused in `validate::member`). Every error names the file, the
//! line and the key; the URLs are checked here, once, so connecting never meets a malformed
//! one. Called by [`super::Workspace::parse`].

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::validate::error_at;

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The NATS servers, as written (`nats://`, `tls://`, `ws://` or `wss://`); TLS by scheme.
    pub nats: Vec<String>,
    /// This machine's name in events, runs and claims: the machine's host name unless set.
    pub host: String,
    /// A NATS `.creds` file (absolute), or none.
    pub credentials: Option<PathBuf>,
    /// The stream's and the buckets' replicas: 1 for one server, 3 in a three-server cluster.
    pub replicas: usize,
    /// The most bytes the events stream keeps (its oldest events go first); `None`: no limit
    /// but age.
    pub max_bytes: Option<u64>,
}

/// `[cluster]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    nats: Option<Spanned<Vec<String>>>,
    host: Option<Spanned<String>>,
    credentials: Option<String>,
    replicas: Option<Spanned<i64>>,
    max_bytes: Option<Spanned<String>>,
}

/// The smallest `max_bytes`: a few of the longest events.
const MIN_MAX_BYTES: usize = 1 << 20;

/// The schemes a `nats` URL may have.
const SCHEMES: [&str; 4] = ["nats", "tls", "ws", "wss"];

/// Checks `[cluster]` of `text` (read from `path`, relative paths against `base`); `None` when
/// the file has none.
pub(super) fn validate(
    raw: Option<Spanned<RawCluster>>,
    text: &str,
    path: &Path,
    base: &Path,
) -> Result<Option<Cluster>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let err = |at: usize, key: &str, message: String| error_at(path, text, at, key, message);
    let at = raw.span().start;
    let r = raw.into_inner();
    let Some(nats) = r.nats else {
        return Err(err(
            at,
            "cluster",
            "missing `nats`: the NATS servers, e.g. nats = [\"nats://127.0.0.1:4222\"]".into(),
        ));
    };
    let nats_at = nats.span().start;
    let nats = nats.into_inner();
    if nats.is_empty() {
        return Err(err(
            nats_at,
            "cluster.nats",
            "no server: name at least one, e.g. \"nats://127.0.0.1:4222\"".into(),
        ));
    }
    for url in &nats {
        check_url(url).map_err(|m| err(nats_at, "cluster.nats", m))?;
    }
    let host = match r.host {
        Some(h) => {
            let name = h.get_ref().trim().to_string();
            check_host(&name).map_err(|m| err(h.span().start, "cluster.host", m))?;
            name
        }
        None => machine_name().unwrap_or_else(|| "localhost".to_string()),
    };
    let replicas = match r.replicas {
        None => 1,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(n @ 1..=5) => n,
            _ => {
                return Err(err(
                    n.span().start,
                    "cluster.replicas",
                    format!(
                        "invalid replicas {}: 1 to 5 (JetStream's limit), 3 for a cluster of \
                         three servers",
                        n.get_ref()
                    ),
                ));
            }
        },
    };
    let max_bytes = match r.max_bytes {
        None => None,
        Some(b) => match super::validate::parse_size(b.get_ref()) {
            Some(0) => None,
            Some(n) if n >= MIN_MAX_BYTES => Some(n as u64),
            _ => {
                return Err(err(
                    b.span().start,
                    "cluster.max_bytes",
                    format!(
                        "invalid size {:?}: \"0\" (no limit) or at least 1MiB, like \"50GiB\" \
                         (units B, KiB, MiB, GiB; KB, MB, GB are powers of 1000)",
                        b.get_ref()
                    ),
                ));
            }
        },
    };
    let credentials = r
        .credentials
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .map(|c| base.join(c).components().collect());
    Ok(Some(Cluster {
        nats,
        host,
        credentials,
        replicas,
        max_bytes,
    }))
}

/// Whether `url` is a NATS server's address: `scheme://host:port` (the port may be left out),
/// or why not.
fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "invalid server {url:?}: a URL such as \"nats://127.0.0.1:4222\""
        ));
    };
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "invalid server {url:?}: the scheme is one of {}",
            SCHEMES.join(", ")
        ));
    }
    // user:password@ is allowed by NATS; what follows must be a host.
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    if hostport.is_empty()
        || hostport
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid server {url:?}: no host"));
    }
    if let Some((_, port)) = hostport.rsplit_once(':')
        && !hostport.ends_with(']')
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!(
            "invalid server {url:?}: the port {port:?} is not 1 to 65535"
        ));
    }
    // What the client will make of it: the same parser as when connecting.
    url.parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| format!("invalid server {url:?}: {e}"))
}

/// Whether `name` can name a host in events and claims, or why not.
fn check_host(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("invalid host {name:?}: 1 to 253 characters"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid host {name:?}: no spaces or control characters"
        ));
    }
    Ok(())
}

/// The machine's host name, if it has one.
pub fn machine_name() -> Option<String> {
    #[cfg(unix)]
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    #[cfg(not(unix))]
    let name = std::env::var("COMPUTERNAME").ok();
    name.filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const MINIMAL: &str = "[pipeline]\nname = \"p\"\n\n[[stages]]\nname = \"a\"\nrun = \"true\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("{MINIMAL}\n{extra}"),
            Path::new("/p/pipewatch.toml"),
        )
    }

    fn err(extra: &str) -> (usize, String, String) {
        match parse(extra) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn no_table_means_no_cluster() {
        assert_eq!(parse("").map(|c| c.cluster).ok(), Some(None));
    }

    #[test]
    fn a_full_table_is_read_with_paths_resolved() {
        let c = parse(
            "[cluster]\nnats = [\"nats://10.0.0.1:4222\", \"tls://n2.example.com\"]\nhost = \"etl-01\"\ncredentials = \"secrets/pw.creds\"\nreplicas = 3\nmax_bytes = \"50GiB\"\n",
        )
        .map(|c| c.cluster)
        .ok()
        .flatten();
        assert_eq!(
            c,
            Some(Cluster {
                nats: vec!["nats://10.0.0.1:4222".into(), "tls://n2.example.com".into()],
                host: "etl-01".into(),
                credentials: Some(PathBuf::from("/p/secrets/pw.creds")),
                replicas: 3,
                max_bytes: Some(50 << 30),
            })
        );
    }

    #[test]
    fn the_host_defaults_to_the_machine_name() {
        let c = parse("[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\n")
            .map(|c| c.cluster)
            .ok()
            .flatten();
        let host = c.map(|c| c.host).unwrap_or_default();
        assert!(!host.is_empty());
        assert_eq!(Some(host.clone()), machine_name().or(Some(host)));
    }

    #[test]
    fn bad_values_name_their_key_and_line() {
        let (line, key, m) = err("[cluster]\nhost = \"a\"\n");
        assert_eq!((line, key.as_str()), (8, "cluster"));
        assert!(m.contains("missing `nats`"), "{m}");
        let (line, key, m) = err("[cluster]\nnats = []\n");
        assert_eq!((line, key.as_str()), (9, "cluster.nats"));
        assert!(m.contains("no server"), "{m}");
        let (_, key, m) = err("[cluster]\nnats = [\"http://x:4222\"]\n");
        assert_eq!(key, "cluster.nats");
        assert!(
            m.contains("\"http://x:4222\"") && m.contains("nats, tls"),
            "{m}"
        );
        let (_, _, m) = err("[cluster]\nnats = [\"nats://x:99999\"]\n");
        assert!(m.contains("\"99999\""), "{m}");
        let (_, _, m) = err("[cluster]\nnats = [\"127.0.0.1:4222\"]\n");
        assert!(m.contains("a URL such as"), "{m}");
        let (line, key, _) = err("[cluster]\nnats = [\"nats://x\"]\nhost = \"two words\"\n");
        assert_eq!((line, key.as_str()), (10, "cluster.host"));
        let (_, key, m) = err("[cluster]\nnats = [\"nats://x\"]\nreplicas = 7\n");
        assert_eq!(key, "cluster.replicas");
        assert!(m.contains("1 to 5"), "{m}");
        let (_, key, m) = err("[cluster]\nnats = [\"nats://x\"]\nmax_bytes = \"10KiB\"\n");
        assert_eq!(key, "cluster.max_bytes");
        assert!(
            m.contains("\"10KiB\"") && m.contains("at least 1MiB"),
            "{m}"
        );
        let (_, key, _) = err("[cluster]\nnats = [\"nats://x\"]\nleader = true\n");
        assert!(key.starts_with("cluster"), "{key}");
    }
}
