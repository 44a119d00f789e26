//! A host as HTTP names it: a DNS name or an IP literal, and an optional port — what
//! `[server] allowed_hosts` lists and what a request's `Host` header says.
//!
//! One parser for both, so an entry in the file and the header it is meant to match can never
//! be read two ways. It is strict on purpose: what a browser would normalize first (`127.1`,
//! `0x7f.0.0.1`, a trailing dot, upper case) is either normalized here the same way (case) or
//! refused (numeric-looking names that are not a dotted-quad IPv4, bracket-less IPv6, user
//! info, paths, spaces), so a refused value is never one a browser can send for an accepted
//! one. Used by `config::validate` (the key) and `server::auth` (the header).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A DNS name (lower-cased) or an IP literal, with the port if one was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: HostName,
    pub port: Option<u16>,
}

/// The host part of a [`Host`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// IPv6 literals are kept canonical (an IPv4-mapped one is its IPv4 address).
    Ip(IpAddr),
    /// Lower case, labels of letters, digits, `-` and `_`.
    Dns(String),
}

impl Host {
    /// Parses `name`, `name:port`, `1.2.3.4:port` or `[v6]:port`.
    pub fn parse(s: &str) -> Result<Host, String> {
        let (name, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: an IPv6 address needs its closing `]`"))?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| format!("{s:?}: {inside:?} is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(port(
                    s,
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: only `:PORT` may follow an IPv6 address"))?,
                )?),
            };
            (HostName::Ip(IpAddr::V6(ip).to_canonical()), port)
        } else {
            let (name, port) = match s.split_once(':') {
                Some((n, p)) => (n, Some(port(s, p)?)),
                None => (s, None),
            };
            (dns_or_ipv4(s, name)?, port)
        };
        Ok(Host { name, port })
    }
}

fn port(whole: &str, p: &str) -> Result<u16, String> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{whole:?}: the port must be a number up to 65535"));
    }
    p.parse()
        .map_err(|_| format!("{whole:?}: the port must be a number up to 65535"))
}

fn dns_or_ipv4(whole: &str, name: &str) -> Result<HostName, String> {
    if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
        return Ok(HostName::Ip(IpAddr::V4(ip)));
    }
    let bad = || {
        format!(
            "{whole:?}: write a host name (letters, digits, `-`, `.`), an IPv4 address or an [IPv6] address, with an optional :port"
        )
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !labels.iter().all(label_ok) {
        return Err(bad());
    }
    // A browser reads a name whose last label is a number as an IPv4 address (`127.1`,
    // `0x7f.1`): such a name is never a DNS name.
    let last = labels.last().copied().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .or_else(|| last.strip_prefix("0X"))
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(bad());
    }
    Ok(HostName::Dns(name.to_ascii_lowercase()))
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostName::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostName::Dns(n) => f.write_str(n)?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        Host::parse(s).unwrap().to_string()
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(ok("Dash.Example.COM"), "dash.example.com");
        assert_eq!(ok("localhost:8001"), "localhost:8001");
        assert_eq!(ok("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(ok("[::1]:8001"), "[::1]:8001");
        assert_eq!(ok("[::ffff:127.0.0.1]:1"), "127.0.0.1:1");
        assert_eq!(ok("[0:0::1]"), "[::1]");
        assert_eq!(ok("my_host-1.lan"), "my_host-1.lan");
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "",
            ":80",
            "a:",
            "a:99999",
            "a:+1",
            "a:8001:1",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]80",
            "[1.2.3.4]",
            "user@host",
            "host/path",
            "host name",
            "host.",
            ".host",
            "a..b",
            "127.1",
            "0x7f.0.0.1",
            "2130706433",
            "evil.example\u{202e}",
            "é.example",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
