//! What an API key may do and from where: its scope, its label, and the
//! address ranges it is accepted from. Chosen when the key is created and
//! fixed for its life (a different need is a new key).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::AccountError;

/// Longest label of an API key, in characters.
pub const MAX_API_KEY_LABEL_CHARS: usize = 64;
/// Most address ranges in one key's allow-list.
pub const MAX_ALLOWED_IP_RANGES: usize = 16;

/// What an API key may do, each scope including the ones before it. Ordered:
/// a key may call a route when its scope is at least the route's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ApiKeyScope {
    /// Read orders (and their codes), the wallet and deposits.
    Read,
    /// Read, and place, cancel, complete, resend and reorder orders; ask for
    /// deposits. What every key created before scopes existed may do.
    Orders,
    /// Everything an API key may do (never what needs a fresh session).
    Full,
}

impl ApiKeyScope {
    /// Whether a key of this scope may do what needs `needed`.
    pub fn covers(self, needed: ApiKeyScope) -> bool {
        self >= needed
    }

    /// The scope's name on the wire and in documents.
    pub const fn name(self) -> &'static str {
        match self {
            ApiKeyScope::Read => "read",
            ApiKeyScope::Orders => "orders",
            ApiKeyScope::Full => "full",
        }
    }
}

/// One address range of an allow-list, as stored in events: an address and
/// a prefix length (a single address is a full-length prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpRange {
    /// A CIDR range (`10.0.0.0/8`, `2001:db8::/32`) or a single address,
    /// reduced to its network address.
    pub fn parse(text: &str) -> Option<IpRange> {
        let text = text.trim();
        let net = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .ok()?
            .trunc();
        Some(IpRange {
            addr: net.addr(),
            prefix_len: net.prefix_len(),
        })
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4 one) is
    /// in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        IpNet::new(self.addr, self.prefix_len).is_ok_and(|net| net.contains(&ip.to_canonical()))
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// What a new key is created with, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeySettings {
    pub scope: ApiKeyScope,
    pub label: Option<String>,
    /// Empty: any address.
    pub allowed_ips: Vec<IpRange>,
}

impl ApiKeySettings {
    /// Checks a label (at most [`MAX_API_KEY_LABEL_CHARS`], no control
    /// characters; blank is none) and an allow-list (at most
    /// [`MAX_ALLOWED_IP_RANGES`] ranges, each a CIDR range or an address).
    pub fn new(
        scope: ApiKeyScope,
        label: Option<&str>,
        allowed_ips: &[String],
    ) -> Result<ApiKeySettings, AccountError> {
        let label = label.map(str::trim).filter(|l| !l.is_empty());
        if let Some(label) = label {
            if label.chars().count() > MAX_API_KEY_LABEL_CHARS {
                return Err(AccountError::InvalidApiKeyLabel {
                    reason: "longer than 64 characters",
                });
            }
            if label.chars().any(char::is_control) {
                return Err(AccountError::InvalidApiKeyLabel {
                    reason: "control characters are not allowed",
                });
            }
        }
        if allowed_ips.len() > MAX_ALLOWED_IP_RANGES {
            return Err(AccountError::InvalidAllowedIps {
                reason: "at most 16 ranges",
            });
        }
        let allowed_ips = allowed_ips
            .iter()
            .map(|text| IpRange::parse(text))
            .collect::<Option<Vec<_>>>()
            .ok_or(AccountError::InvalidAllowedIps {
                reason: "each entry must be a CIDR range or an address",
            })?;
        Ok(ApiKeySettings {
            scope,
            label: label.map(str::to_owned),
            allowed_ips,
        })
    }

    /// What every key got before keys had settings: scope `orders`, no label,
    /// any address.
    pub fn legacy() -> ApiKeySettings {
        ApiKeySettings {
            scope: ApiKeyScope::Orders,
            label: None,
            allowed_ips: Vec::new(),
        }
    }
}

/// Whether an allow-list admits `ip` (an empty list admits every address).
pub fn ip_allowed(allowed_ips: &[IpRange], ip: IpAddr) -> bool {
    allowed_ips.is_empty() || allowed_ips.iter().any(|range| range.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn scopes_include_the_ones_below() {
        use ApiKeyScope::*;
        assert!(Full.covers(Orders) && Full.covers(Read) && Orders.covers(Read));
        assert!(!Read.covers(Orders) && !Orders.covers(Full) && !Read.covers(Full));
        assert!(Read.covers(Read));
    }

    #[test]
    fn ranges_of_both_families_and_single_addresses() {
        let settings = ApiKeySettings::new(
            ApiKeyScope::Read,
            Some(" ci runner "),
            &[
                "10.1.2.3/8".into(),
                "2001:db8::/32".into(),
                "192.0.2.7".into(),
            ],
        )
        .unwrap();
        assert_eq!(settings.label.as_deref(), Some("ci runner"));
        let shown: Vec<String> = settings.allowed_ips.iter().map(|r| r.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        let list = &settings.allowed_ips;
        assert!(ip_allowed(list, ip("10.200.0.1")));
        assert!(ip_allowed(list, ip("::ffff:10.0.0.9")));
        assert!(ip_allowed(list, ip("2001:db8:1::1")));
        assert!(ip_allowed(list, ip("192.0.2.7")));
        assert!(!ip_allowed(list, ip("192.0.2.8")));
        assert!(!ip_allowed(list, ip("127.0.0.1")));
        assert!(!ip_allowed(list, ip("2001:db9::1")));
        assert!(ip_allowed(&[], ip("127.0.0.1")), "no list: any address");
    }

    #[test]
    fn bad_labels_and_lists_are_refused() {
        let scope = ApiKeyScope::Orders;
        let long = "x".repeat(MAX_API_KEY_LABEL_CHARS + 1);
        assert!(matches!(
            ApiKeySettings::new(scope, Some(&long), &[]),
            Err(AccountError::InvalidApiKeyLabel { .. })
        ));
        let exact = "é".repeat(MAX_API_KEY_LABEL_CHARS);
        assert!(ApiKeySettings::new(scope, Some(&exact), &[]).is_ok());
        assert!(matches!(
            ApiKeySettings::new(scope, Some("a\u{7}b"), &[]),
            Err(AccountError::InvalidApiKeyLabel { .. })
        ));
        assert_eq!(
            ApiKeySettings::new(scope, Some("  "), &[]).unwrap().label,
            None
        );
        let many: Vec<String> = (0..=MAX_ALLOWED_IP_RANGES)
            .map(|i| format!("10.0.0.{i}"))
            .collect();
        assert!(matches!(
            ApiKeySettings::new(scope, None, &many),
            Err(AccountError::InvalidAllowedIps { .. })
        ));
        assert!(ApiKeySettings::new(scope, None, &many[1..]).is_ok());
        for bad in ["10.0.0.0/33", "example.com", "", "10.0.0/8"] {
            assert!(
                ApiKeySettings::new(scope, None, &[bad.into()]).is_err(),
                "{bad:?}"
            );
        }
    }
}
