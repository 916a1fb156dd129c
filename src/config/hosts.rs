//! `host` and `port`: broker addresses, host names, IPv4 and IPv6.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Endpoint;

/// A TCP port in 1..=65535.
pub(super) fn parse_port(value: &str) -> Result<u16, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("{value:?} is not a port number (1..65535)")),
    }
}

/// Checks a host name (letters, digits, `-`, `_`, dot-separated labels) or
/// an IPv4 address. Dotted numbers that are not an IPv4 address are
/// rejected rather than looked up as a name.
pub(super) fn check_host_name(host: &str) -> Result<(), String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("{host:?} is not a valid host name or IP address");
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        let ok = (1..=63).contains(&label.len())
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("{host:?} is not a valid IPv4 address"));
    }
    Ok(())
}

/// Parses `host = rmq1,rmq2:5673,[::1]:5674`. `default_port` is `None`
/// when `port` itself is bad (already reported): entries without their own
/// port then yield nothing, without a second error.
pub(super) fn parse_hosts(value: &str, default_port: Option<u16>) -> (Vec<Endpoint>, Vec<String>) {
    let mut endpoints = Vec::new();
    let mut errors = Vec::new();
    if value.trim().is_empty() {
        errors.push("is empty (give a host name or address)".to_owned());
        return (endpoints, errors);
    }
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            errors.push(format!("{value:?} has an empty entry between commas"));
            continue;
        }
        match parse_host_entry(entry) {
            Ok((host, port)) => {
                if let Some(port) = port.or(default_port) {
                    endpoints.push(Endpoint { host, port });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (endpoints, errors)
}

/// One `host[:port]`, `[v6][:port]` or bare IPv6 entry.
fn parse_host_entry(entry: &str) -> Result<(String, Option<u16>), String> {
    let port_of = |p: &str| parse_port(p).map_err(|e| format!("in {entry:?}: {e}"));
    if let Some(r) = entry.strip_prefix('[') {
        let Some((addr, after)) = r.split_once(']') else {
            return Err(format!("{entry:?}: missing ']' after the IPv6 address"));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{addr:?} is not a valid IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(port_of(p)?),
                None => return Err(format!("{entry:?}: expected ':PORT' after ']'")),
            },
        };
        return Ok((addr.to_owned(), port));
    }
    if entry.matches(':').count() > 1 {
        return match entry.parse::<Ipv6Addr>() {
            Ok(_) => Ok((entry.to_owned(), None)),
            Err(_) => Err(format!(
                "{entry:?} is not a valid address (write an IPv6 address with a port \
                 in brackets, e.g. [::1]:5672)"
            )),
        };
    }
    let (host, port) = match entry.split_once(':') {
        Some((h, p)) => (h.trim(), Some(port_of(p)?)),
        None => (entry, None),
    };
    check_host_name(host)?;
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use crate::config::Endpoint;
    use crate::config::test_util::*;

    #[test]
    fn port_must_be_in_range() {
        for bad in ["0", "65536", "-1", "abc", "5672.0", ""] {
            let text = base("").replace("port = 5672", &format!("port = {bad}"));
            assert!(
                has(
                    &errors(&text),
                    "test.ini: [rabbit] port: ",
                    "not a port number"
                ),
                "{bad}"
            );
        }
        let text = base("").replace("port = 5672", "port = 65535");
        assert_eq!(ok(&text).config.endpoints[0].port, 65535);
    }

    #[test]
    fn invalid_hosts_are_rejected() {
        for bad in [
            "bad host",
            "-lead.example",
            "a..b",
            "256.1.1.1",
            "rmq1,,rmq2",
            "[::1",
            "[nothex]:5672",
            "fe80::1:5672:x",
            "",
        ] {
            let text = base("").replace("host = localhost", &format!("host = {bad}"));
            assert!(
                has(&errors(&text), "test.ini: [rabbit] host: ", ""),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn multi_host_with_ports_and_ipv6() {
        let text = base("").replace(
            "host = localhost",
            "host = rmq1, rmq2:5673,[::1]:5674,10.0.0.7,[fe80::2],2001:db8::9",
        );
        let eps = ok(&text).config.endpoints;
        let shown: Vec<String> = eps.iter().map(Endpoint::to_string).collect();
        assert_eq!(
            shown,
            [
                "rmq1:5672",
                "rmq2:5673",
                "[::1]:5674",
                "10.0.0.7:5672",
                "[fe80::2]:5672",
                "[2001:db8::9]:5672"
            ]
        );
        assert_eq!(eps[2].host, "::1");
    }
}
