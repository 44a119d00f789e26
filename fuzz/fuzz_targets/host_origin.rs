//! The `Host` / `Origin` decision (`server::auth::check_host_origin`) on arbitrary headers:
//! never a panic, and never an accepted `Host` that is a DNS name this server was not told
//! about — the one thing DNS rebinding needs.
//!
//! Input: one byte picks the bound address and whether the Origin is checked, then lines:
//! `h VALUE` adds a `Host`, `o VALUE` an `Origin`, `a VALUE` is the target's authority.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use pipewatch::config::host::{Host, HostName};
use pipewatch::server::auth::{AllowedHosts, check_host_origin};

const BOUND: &[&str] = &["127.0.0.1:8001", "0.0.0.0:8001", "[::]:80", "10.0.0.5:8001", "[::1]:8001"];
const CONFIGURED: &[&str] = &["dash.example.com", "proxy.example:8443"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let bound = BOUND[usize::from(pick) % BOUND.len()];
    let check_origin = pick & 0x80 != 0;
    let configured: Vec<Host> = CONFIGURED
        .iter()
        .map(|c| Host::parse(c).expect("a valid entry"))
        .collect();
    let allowed = AllowedHosts::new(bound.parse().expect("an address"), &configured);

    let mut headers = HeaderMap::new();
    let mut authority = None;
    for line in rest.split(|b| *b == b'\n') {
        let Some((&kind, value)) = line.split_first() else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match kind {
            b'h' | b'o' => {
                let Ok(v) = HeaderValue::from_bytes(value) else {
                    continue;
                };
                let name = if kind == b'h' { header::HOST } else { header::ORIGIN };
                headers.append(name, v);
            }
            b'a' => authority = std::str::from_utf8(value).ok(),
            _ => {}
        }
    }
    let decision = check_host_origin(&headers, authority, &allowed, check_origin);
    if decision.is_ok() {
        let hosts: Vec<_> = headers.get_all(header::HOST).iter().collect();
        assert_eq!(hosts.len(), 1, "accepted with {} Host headers", hosts.len());
        let host = hosts[0].to_str().expect("an accepted Host is text");
        let parsed = Host::parse(host.trim()).expect("an accepted Host parses");
        if let HostName::Dns(name) = &parsed.name {
            assert!(
                name == "localhost" || configured.iter().any(|c| c.name == parsed.name),
                "accepted the unconfigured name {host:?} (bound {bound})"
            );
        }
        if let Some(a) = authority {
            let a = Host::parse(a.trim()).expect("an accepted authority parses");
            if let HostName::Dns(name) = &a.name {
                assert!(name == "localhost" || configured.iter().any(|c| c.name == a.name));
            }
        }
    }
});
