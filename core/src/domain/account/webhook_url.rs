//! Which webhook URLs are accepted, and the address checks that keep deliveries
//! off this machine and internal networks.

use std::fmt;

use super::{AccountError, MAX_WEBHOOK_URL_BYTES};

/// Which webhook URLs are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookUrlPolicy {
    /// Also accept `http://` and hosts that are loopback, private, link-local or
    /// otherwise internal addresses (`localhost`, `127.0.0.1`, `10.…`, `[::1]`):
    /// for development only. Off by default.
    pub allow_insecure: bool,
}

/// A customer's webhook URL in normal form. Debug never prints it (a path or
/// query may carry the receiver's own token).
///
/// Accepted ([`WebhookUrl::parse`]):
/// - surrounding whitespace is trimmed; at most [`MAX_WEBHOOK_URL_BYTES`] bytes of
///   printable ASCII remain (no spaces; non-ASCII must be percent-encoded or
///   punycode);
/// - the scheme is `https` (or `http` under [`WebhookUrlPolicy::allow_insecure`]);
/// - no user name or password (`user:pass@host`) and no fragment (`#…`);
/// - a host name of letters, digits, `-` and `.` without empty labels, an IPv4
///   address in dotted-quad form or a bracketed IPv6 address, and an optional
///   port 1–65535; a host whose last label is numeric must be a dotted quad
///   (`127.1` or `2130706433` are refused, since resolvers read them as
///   addresses);
/// - unless insecure URLs are allowed, the host is not `localhost` (or under
///   `.localhost`) nor a loopback, private, link-local, site-local, shared,
///   unspecified, broadcast, multicast or documentation address, nor an IPv6
///   address that embeds an IPv4 one (IPv4-compatible `::/96`, NAT64
///   `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32`), see
///   [`ip_is_internal`].
///
/// The scheme and host are lowercased; path and query are kept as given.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(raw: &str, policy: WebhookUrlPolicy) -> Result<WebhookUrl, AccountError> {
        let invalid = |reason| Err(AccountError::InvalidWebhookUrl { reason });
        let text = raw.trim();
        if text.is_empty() {
            return invalid("empty");
        }
        if text.len() > MAX_WEBHOOK_URL_BYTES {
            return invalid("longer than 2048 bytes");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid("only printable ASCII without spaces is allowed");
        }
        if text.contains('#') {
            return invalid("a fragment (#) is not allowed");
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return invalid("no scheme (https://)");
        };
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "https" => {}
            "http" if policy.allow_insecure => {}
            "http" => return invalid("https is required"),
            _ => return invalid("the scheme must be https"),
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return invalid("credentials in the URL are not allowed");
        }
        let (host, port) = split_host_port(authority)?;
        if let Some(port) = port {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !port.starts_with('0') => {}
                _ => return invalid("the port must be a number from 1 to 65535"),
            }
        }
        let host = host.to_ascii_lowercase();
        let internal = host_is_internal(&host)?;
        if internal && !policy.allow_insecure {
            return invalid("the host is a local or private address");
        }
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        Ok(WebhookUrl(format!("{scheme}://{host}{port}{path}")))
    }

    /// The normalized URL, where deliveries are sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookUrl(<redacted>)")
    }
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), AccountError> {
    let invalid = |reason| Err(AccountError::InvalidWebhookUrl { reason });
    if authority.is_empty() {
        return invalid("no host");
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return invalid("an IPv6 address must end with ']'");
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return invalid("unexpected text after the IPv6 address"),
            },
        };
        return Ok((&authority[..v6.len() + 2], port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

/// Whether a (lowercased) host names this machine or an internal network;
/// refuses hosts that are not shaped like a name or an address.
fn host_is_internal(host: &str) -> Result<bool, AccountError> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let invalid = |reason| Err(AccountError::InvalidWebhookUrl { reason });
    if let Some(inner) = host.strip_prefix('[') {
        let Ok(ip) = inner.trim_end_matches(']').parse::<Ipv6Addr>() else {
            return invalid("not a valid IPv6 address");
        };
        return Ok(ip_is_internal(std::net::IpAddr::V6(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return invalid("not a valid host name");
    }
    let labels: Vec<&str> = name.split('.').collect();
    let well_formed = labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    if !well_formed {
        return invalid("not a valid host name");
    }
    let last = labels.last().copied().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        let Ok(ip) = name.parse::<Ipv4Addr>() else {
            return invalid("a numeric host must be a dotted-quad IPv4 address");
        };
        return Ok(ipv4_is_internal(ip));
    }
    Ok(name == "localhost" || name.ends_with(".localhost"))
}

/// Whether an address is loopback, private, link-local or otherwise not a
/// public internet host, or an IPv6 prefix that embeds an IPv4 address
/// (IPv4-compatible, NAT64, 6to4, Teredo): webhooks never go there (checked on the URL,
/// and again at every delivery, on an address in the URL and on every address
/// its host name resolves to).
pub fn ip_is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => ipv4_is_internal(v4),
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return ipv4_is_internal(v4);
            }
            let s = v6.segments();
            let first = s[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (first == 0x2001 && s[1] == 0x0db8) // documentation
                // Prefixes that carry an IPv4 address a gateway or tunnel
                // forwards to: whatever IPv4 host they name is refused with
                // them, so none can reach an internal one.
                || s[..6] == [0; 6] // IPv4-compatible ::/96 (deprecated)
                || (first == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4]) // NAT64 64:ff9b::/96
                || (first == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local NAT64 64:ff9b:1::/48
                || first == 0x2002 // 6to4 2002::/16
                || (first == 0x2001 && s[1] == 0) // Teredo 2001::/32
                || (first == 0x0100 && s[1..4] == [0; 3]) // discard-only 100::/64
        }
    }
}

fn ipv4_is_internal(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || a >= 240
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::fixtures::*;

    const INSECURE: WebhookUrlPolicy = WebhookUrlPolicy {
        allow_insecure: true,
    };

    #[test]
    fn webhook_url_table() {
        let good = [
            (
                "https://hooks.example.com/nexus",
                "https://hooks.example.com/nexus",
            ),
            (
                "  HTTPS://Hooks.Example.COM:8443/In?Token=AbC  ",
                "https://hooks.example.com:8443/In?Token=AbC",
            ),
            ("https://example.com", "https://example.com"),
            ("https://example.com?x=1", "https://example.com?x=1"),
            ("https://93.184.216.34/h", "https://93.184.216.34/h"),
            (
                "https://[2606:2800:220:1::1]:443/h",
                "https://[2606:2800:220:1::1]:443/h",
            ),
            ("https://xn--exmple-cua.de/h", "https://xn--exmple-cua.de/h"),
        ];
        for (raw, normal) in good {
            assert_eq!(
                WebhookUrl::parse(raw, STRICT).unwrap().as_str(),
                normal,
                "{raw:?}"
            );
        }
        let at_limit = format!("https://example.com/{}", "p".repeat(2048 - 20));
        assert_eq!(at_limit.len(), 2048);
        WebhookUrl::parse(&at_limit, STRICT).unwrap();
        let over = format!("{at_limit}p");
        let bad = [
            ("", "empty"),
            ("example.com/hook", "no scheme"),
            ("ftp://example.com/", "the scheme"),
            ("http://example.com/", "https is required"),
            ("https://user:pass@example.com/", "credentials"),
            ("https://token@example.com/", "credentials"),
            ("https://example.com/#frag", "fragment"),
            ("https://exa mple.com/", "printable ASCII"),
            ("https://exämple.com/", "printable ASCII"),
            ("https:///path", "no host"),
            ("https://example.com:0/", "port"),
            ("https://example.com:65536/", "port"),
            ("https://example.com:/", "port"),
            ("https://example.com:08/", "port"),
            ("https://exa_mple.com/", "host name"),
            ("https://example..com/", "host name"),
            ("https://-example.com/", "host name"),
            ("https://[::1/", "IPv6"),
            ("https://[zz::1]/", "IPv6"),
            ("https://127.1/", "dotted-quad"),
            ("https://2130706433/", "dotted-quad"),
            ("https://0x7f.0x0.0x0.0x1/", "dotted-quad"),
            ("https://localhost/", "local or private"),
            ("https://api.localhost/", "local or private"),
            ("https://127.0.0.1:8080/", "local or private"),
            ("https://10.1.2.3/", "local or private"),
            ("https://172.16.0.1/", "local or private"),
            ("https://192.168.1.1/", "local or private"),
            (
                "https://169.254.169.254/latest/meta-data",
                "local or private",
            ),
            ("https://100.64.0.1/", "local or private"),
            ("https://0.0.0.0/", "local or private"),
            ("https://[::1]/", "local or private"),
            ("https://[fd00::1]/", "local or private"),
            ("https://[fe80::1]/", "local or private"),
            ("https://[::ffff:127.0.0.1]/", "local or private"),
            ("https://[fec0::1]/", "local or private"),
            ("https://[::a9fe:a9fe]/", "local or private"),
            ("https://[64:ff9b::a9fe:a9fe]/", "local or private"),
            ("https://[2002:a9fe:a9fe::1]/", "local or private"),
            (over.as_str(), "2048"),
        ];
        for (raw, why) in bad {
            match WebhookUrl::parse(raw, STRICT) {
                Err(AccountError::InvalidWebhookUrl { reason }) => {
                    assert!(reason.contains(why), "{raw:?}: {reason}")
                }
                other => panic!("{raw:?} should be refused, got {other:?}"),
            }
        }
        // A public IPv4 address behind an IPv6 prefix that embeds it is
        // refused too: the prefix, not the embedded address, decides.
        for raw in [
            "https://[::5db8:d822]/",
            "https://[64:ff9b::5db8:d822]/",
            "https://[2002:5db8:d822::1]/",
        ] {
            assert!(WebhookUrl::parse(raw, STRICT).is_err(), "{raw:?}");
        }
        // Development: plain HTTP and this machine are allowed; the rest holds.
        for raw in [
            "http://127.0.0.1:8080/hook",
            "http://localhost:3000/",
            "https://[::1]:9000/",
            "http://10.0.0.5/",
        ] {
            WebhookUrl::parse(raw, INSECURE).unwrap();
        }
        for raw in [
            "http://u:p@127.0.0.1/",
            "ftp://127.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1/#x",
        ] {
            assert!(WebhookUrl::parse(raw, INSECURE).is_err(), "{raw:?}");
        }
        // Reasons never echo the URL.
        let err = WebhookUrl::parse("https://user:hunter2@example.com/", STRICT).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!(
            format!("{:?}", hook("https://example.com/t?k=s3cret")),
            "WebhookUrl(<redacted>)"
        );
    }

    #[test]
    fn internal_addresses_by_class() {
        let internal = [
            // (class, an address at each end of its range)
            ("IPv4-compatible ::/96", "::a00:1", "::ffff:ffff"),
            ("NAT64 64:ff9b::/96", "64:ff9b::", "64:ff9b::ffff:ffff"),
            (
                "local NAT64 64:ff9b:1::/48",
                "64:ff9b:1::",
                "64:ff9b:1:ffff::1",
            ),
            ("6to4 2002::/16", "2002::", "2002:ffff:ffff::1"),
            // Teredo carries an IPv4 server and (obscured) client address.
            ("Teredo 2001::/32", "2001::", "2001:0:ffff:ffff::1"),
            ("discard-only 100::/64", "100::", "100::ffff:ffff:ffff:ffff"),
            ("IETF protocol assignments", "192.0.0.0", "192.0.0.255"),
            ("6to4 relay anycast", "192.88.99.0", "192.88.99.255"),
            ("site-local fec0::/10", "fec0::", "feff:ffff::1"),
            ("unique local fc00::/7", "fc00::", "fdff::1"),
            ("link-local fe80::/10", "fe80::", "febf::1"),
            ("loopback and unspecified", "::1", "::"),
            ("IPv4-mapped private", "::ffff:10.0.0.1", "::ffff:127.0.0.1"),
        ];
        for (class, low, high) in internal {
            for text in [low, high] {
                let ip: std::net::IpAddr = text.parse().unwrap();
                assert!(ip_is_internal(ip), "{class}: {text}");
            }
        }
        // Just outside those ranges, and ordinary public addresses, are public.
        for text in [
            "1::",
            "64:ff9b:0:0:0:1::",
            "64:ff9b:2::",
            "2001:4860:4860::8888",
            "2001:1::1",
            "100:0:0:1::",
            "192.0.1.1",
            "192.88.98.1",
            "2003::1",
            "2606:2800:220:1::1",
            "::ffff:93.184.216.34",
            "93.184.216.34",
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap();
            assert!(!ip_is_internal(ip), "{text} is public");
        }
    }
}
