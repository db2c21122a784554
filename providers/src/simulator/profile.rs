//! The simulated market: for each (service, country) a profile that gives its
//! price tier, its stock and when its codes arrive.
//!
//! A profile is a pure function of the pair: a stable hash of the two codes
//! (FNV-1a, the same on every run and machine) picks within the rules below,
//! and four fixed pairs are documented exceptions a newcomer can rely on.
//! docs/SIMULATOR.md describes the table and the shares it gives.

use std::time::Duration;

use nexus_core::domain::order::{CountryCode, ServiceCode};

use crate::catalog::Catalog;

/// How expensive a country's numbers are, and how many there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CountryTier {
    /// High-supply countries: the cheapest numbers.
    Cheap,
    /// Every country not named in a list below.
    Standard,
    Mid,
    Expensive,
    /// Remote territories and small islands: dear, little or no stock.
    Remote,
}

const CHEAP: &[&str] = &[
    "ID", "IN", "PH", "VN", "RU", "KZ", "UA", "UZ", "KG", "TJ", "BD", "PK", "NG", "KE", "GH", "EG",
    "MM", "KH", "LA", "NP", "LK", "ET", "TZ", "UG",
];
const MID: &[&str] = &[
    "BR", "MX", "PL", "TR", "TH", "MY", "CO", "AR", "CL", "PE", "ZA", "RO", "MA", "BG", "HU", "CZ",
    "PT", "GR", "RS", "SA",
];
const EXPENSIVE: &[&str] = &[
    "US", "GB", "DE", "FR", "JP", "CA", "AU", "NL", "IT", "ES", "SE", "CH", "NO", "DK", "FI", "AT",
    "BE", "IE", "NZ", "SG", "KR", "HK", "IL", "AE", "CN", "TW",
];
const REMOTE: &[&str] = &[
    "AQ", "BV", "CC", "CK", "CX", "FK", "FM", "GS", "HM", "IO", "KI", "MH", "MS", "NF", "NR", "NU",
    "PM", "PN", "PW", "SH", "SJ", "TF", "TK", "TV", "UM", "VA", "WF", "BL", "MF",
];

/// The services customers ask for most: twice the price of the others.
const MAJOR_SERVICES: &[&str] = &[
    "tg", "wa", "go", "fb", "ig", "tw", "wx", "mm", "am", "ds", "lf", "dr", "vi", "wb", "oi", "ts",
];

impl CountryTier {
    pub fn of(country: CountryCode) -> CountryTier {
        let code = country.as_str();
        if REMOTE.contains(&code) {
            CountryTier::Remote
        } else if EXPENSIVE.contains(&code) {
            CountryTier::Expensive
        } else if MID.contains(&code) {
            CountryTier::Mid
        } else if CHEAP.contains(&code) {
            CountryTier::Cheap
        } else {
            CountryTier::Standard
        }
    }

    /// The country's factor on an upstream's base cost, in percent.
    pub fn price_percent(self) -> u64 {
        match self {
            CountryTier::Cheap => 100,
            CountryTier::Standard => 150,
            CountryTier::Mid => 200,
            CountryTier::Expensive => 400,
            CountryTier::Remote => 1_000,
        }
    }
}

pub fn is_major_service(service: &ServiceCode) -> bool {
    MAJOR_SERVICES.contains(&service.as_str())
}

/// The service's factor on an upstream's base cost, in percent.
pub fn service_percent(service: &ServiceCode) -> u64 {
    if is_major_service(service) {
        200
    } else {
        100
    }
}

/// The pairs whose behaviour is fixed, for quickstarts and demos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixedPair {
    /// Every code arrives 5–15 s after the purchase.
    AlwaysFast,
    /// Every code arrives 4–10 minutes after the purchase: a cancel after the
    /// 120-second guard can always be tried first.
    AlwaysSlow,
    /// No code ever arrives: the number expires after 20 minutes.
    NeverACode,
    /// No number in stock on any simulated upstream.
    OutOfStock,
}

/// The fixed pairs: (service, country, behaviour).
pub const FIXED_PAIRS: [(&str, &str, FixedPair); 4] = [
    ("tg", "ID", FixedPair::AlwaysFast),
    ("wa", "GB", FixedPair::AlwaysSlow),
    ("ig", "BR", FixedPair::NeverACode),
    ("tg", "AQ", FixedPair::OutOfStock),
];

pub fn fixed_pair(service: &ServiceCode, country: CountryCode) -> Option<FixedPair> {
    FIXED_PAIRS
        .iter()
        .find(|(s, c, _)| *s == service.as_str() && *c == country.as_str())
        .map(|(_, _, fixed)| *fixed)
}

/// When a pair's codes arrive: a share arrives within the fast window, a share
/// within the slow window, the rest never (in per mille of activations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub fast_per_mille: u64,
    pub slow_per_mille: u64,
    /// Inclusive bounds, in milliseconds after the purchase.
    pub fast_ms: (u64, u64),
    pub slow_ms: (u64, u64),
}

/// The general windows: most codes within 5–60 s, some after 2–10 minutes.
const FAST_MS: (u64, u64) = (5_000, 60_000);
const SLOW_MS: (u64, u64) = (120_000, 600_000);

impl Arrival {
    const GOOD: Arrival = Arrival::shares(900, 80);
    const FAIR: Arrival = Arrival::shares(700, 220);
    const POOR: Arrival = Arrival::shares(400, 350);

    const fn shares(fast_per_mille: u64, slow_per_mille: u64) -> Arrival {
        Arrival {
            fast_per_mille,
            slow_per_mille,
            fast_ms: FAST_MS,
            slow_ms: SLOW_MS,
        }
    }

    pub fn never_per_mille(&self) -> u64 {
        1_000 - self.fast_per_mille - self.slow_per_mille
    }

    /// One activation's delay, drawn with `below(n)` (uniform in `0..n`);
    /// `None`: its code never arrives.
    pub fn draw(&self, mut below: impl FnMut(u64) -> u64) -> Option<Duration> {
        let within = |(min, max): (u64, u64), below: &mut dyn FnMut(u64) -> u64| {
            Some(Duration::from_millis(min + below(max - min + 1)))
        };
        let roll = below(1_000);
        if roll < self.fast_per_mille {
            within(self.fast_ms, &mut below)
        } else if roll < self.fast_per_mille + self.slow_per_mille {
            within(self.slow_ms, &mut below)
        } else {
            None
        }
    }
}

/// What the simulated market says about one (service, country).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub tier: CountryTier,
    /// The factor on an upstream's base cost, in per mille: country tier ×
    /// service weight × a spread of 0–9 % from the hash.
    pub price_per_mille: u64,
    /// Numbers in stock on each simulated upstream before any is sold.
    pub stock: u64,
    pub arrival: Arrival,
}

impl Profile {
    pub fn of(service: &ServiceCode, country: CountryCode) -> Profile {
        let tier = CountryTier::of(country);
        let fixed = fixed_pair(service, country);
        let spread_percent = roll(service, country, "price") % 10;
        let price_per_mille =
            tier.price_percent() * service_percent(service) * (100 + spread_percent) / 1_000;
        Profile {
            tier,
            price_per_mille,
            stock: stock(service, country, tier, fixed),
            arrival: arrival(service, country, tier, fixed),
        }
    }

    /// An upstream's cost for this pair: its base cost times the pair's
    /// factor, in whole thousandths of a dollar. Every upstream's costs keep
    /// the order of their base costs.
    pub fn cost_micros(&self, base_micros: i64) -> i64 {
        let micros = i128::from(base_micros) * i128::from(self.price_per_mille) / 1_000;
        let rounded = micros / 1_000 * 1_000;
        i64::try_from(rounded).unwrap_or(i64::MAX)
    }
}

/// Stock levels: none, a few (gone after a few buys), some, many.
fn stock(
    service: &ServiceCode,
    country: CountryCode,
    tier: CountryTier,
    fixed: Option<FixedPair>,
) -> u64 {
    let h = roll(service, country, "stock");
    let many = 200_000 + h % 800_000;
    match fixed {
        Some(FixedPair::OutOfStock) => return 0,
        Some(_) => return many,
        None => {}
    }
    match tier {
        CountryTier::Remote if h.is_multiple_of(2) => 0,
        CountryTier::Remote => 1 + (h >> 8) % 3,
        CountryTier::Cheap | CountryTier::Mid | CountryTier::Expensive
            if is_major_service(service) =>
        {
            many
        }
        _ => match h % 100 {
            0..=4 => 0,
            5..=14 => 1 + (h >> 8) % 5,
            15..=49 => 50 + (h >> 8) % 4_951,
            _ => 20_000 + (h >> 8) % 180_000,
        },
    }
}

fn arrival(
    service: &ServiceCode,
    country: CountryCode,
    tier: CountryTier,
    fixed: Option<FixedPair>,
) -> Arrival {
    match fixed {
        Some(FixedPair::AlwaysFast) => Arrival {
            fast_per_mille: 1_000,
            slow_per_mille: 0,
            fast_ms: (5_000, 15_000),
            slow_ms: SLOW_MS,
        },
        Some(FixedPair::AlwaysSlow) => Arrival {
            fast_per_mille: 0,
            slow_per_mille: 1_000,
            fast_ms: FAST_MS,
            slow_ms: (240_000, 600_000),
        },
        Some(FixedPair::NeverACode | FixedPair::OutOfStock) => Arrival::shares(0, 0),
        None if tier == CountryTier::Remote => Arrival::POOR,
        None => match roll(service, country, "arrival") % 10 {
            0..=5 => Arrival::GOOD,
            6..=8 => Arrival::FAIR,
            _ => Arrival::POOR,
        },
    }
}

/// A phone number of `country` as the upstreams give it: digits only, the
/// country's calling code, then a national number that never starts with 0
/// (10–13 digits in all). A country outside the catalog gets the unassigned
/// calling code 999.
pub fn phone_number(country: CountryCode, mut below: impl FnMut(u64) -> u64) -> String {
    let dial = Catalog::shipped()
        .country(country)
        .map_or_else(|| "999".to_owned(), |c| c.dial_code.to_string());
    let (national_len, prefix) = national_shape(country, dial.len());
    let mut number = dial;
    number.push_str(prefix);
    let mut national_digits = prefix.len();
    if prefix.is_empty() {
        number.push(char::from(b'2' + below(8) as u8));
        national_digits = 1;
    }
    for _ in national_digits..national_len {
        number.push(char::from(b'0' + below(10) as u8));
    }
    number
}

/// The national number's length and the mobile prefix it starts with, for
/// the countries where a common one is well known; otherwise a length by the
/// calling code's length (NANP and 7: 10 digits; 2 digits: 9; 3 digits: 8).
fn national_shape(country: CountryCode, dial_len: usize) -> (usize, &'static str) {
    const KNOWN: &[(&str, usize, &str)] = &[
        ("GB", 10, "7"),
        ("ID", 11, "8"),
        ("IN", 10, "9"),
        ("DE", 11, "15"),
        ("BR", 11, "119"),
        ("FR", 9, "6"),
        ("RU", 10, "9"),
        ("CN", 11, "13"),
        ("JP", 10, "90"),
        ("PH", 10, "9"),
        ("VN", 9, "9"),
    ];
    if let Some((_, length, prefix)) = KNOWN.iter().find(|(c, _, _)| *c == country.as_str()) {
        return (*length, prefix);
    }
    let length = match dial_len {
        1 => 10,
        2 => 9,
        _ => 8,
    };
    (length, "")
}

/// A stable draw for one aspect of a pair: FNV-1a of `aspect/service/country`,
/// finished with SplitMix64's mixer so that every bit depends on every byte.
fn roll(service: &ServiceCode, country: CountryCode, aspect: &str) -> u64 {
    let text = format!("{aspect}/{}/{}", service.as_str(), country.as_str());
    super::mix64(fnv1a(text.as_bytes()))
}

pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::SplitMix64;

    fn service(code: &str) -> ServiceCode {
        ServiceCode::new(code).unwrap()
    }

    fn country(code: &str) -> CountryCode {
        CountryCode::new(code).unwrap()
    }

    /// Every (service, country) of the catalog: 151 services × 249 countries.
    fn all_pairs() -> Vec<(ServiceCode, CountryCode)> {
        let catalog = Catalog::shipped();
        let mut pairs = Vec::new();
        for s in catalog.services() {
            for c in catalog.countries() {
                pairs.push((s.code.clone(), c.iso2));
            }
        }
        pairs
    }

    #[test]
    fn the_tier_lists_name_catalog_entries_once() {
        let catalog = Catalog::shipped();
        let mut seen = std::collections::HashSet::new();
        for code in CHEAP.iter().chain(MID).chain(EXPENSIVE).chain(REMOTE) {
            assert!(catalog.is_known_country(country(code)), "{code}");
            assert!(seen.insert(*code), "{code} in two tiers");
        }
        for code in MAJOR_SERVICES {
            assert!(catalog.is_known_service(code), "{code}");
        }
        for (s, c, _) in FIXED_PAIRS {
            assert!(catalog.is_known_service(s) && catalog.is_known_country(country(c)));
        }
    }

    /// The shares docs/SIMULATOR.md states, over every catalog pair.
    #[test]
    fn the_spread_over_all_pairs_has_the_documented_shares() {
        let pairs = all_pairs();
        let n = pairs.len() as u64;
        let (mut fast, mut slow, mut never) = (0, 0, 0);
        let (mut none, mut few) = (0, 0);
        for (s, c) in &pairs {
            let p = Profile::of(s, *c);
            fast += p.arrival.fast_per_mille;
            slow += p.arrival.slow_per_mille;
            never += p.arrival.never_per_mille();
            none += u64::from(p.stock == 0);
            few += u64::from((1..=5).contains(&p.stock));
        }
        // Expected shares of activations, in per mille.
        let (fast, slow, never) = (fast / n, slow / n, never / n);
        // Pairs out of stock and with a few numbers only, in per mille.
        let (none, few) = (none * 1_000 / n, few * 1_000 / n);
        println!("fast {fast} slow {slow} never {never}; stock none {none} few {few}");
        assert!((700..=760).contains(&fast), "fast {fast}");
        assert!((150..=200).contains(&slow), "slow {slow}");
        assert!((70..=110).contains(&never), "never {never}");
        assert!((90..=130).contains(&none), "out of stock {none}");
        assert!((120..=170).contains(&few), "a few numbers {few}");
    }

    /// Each activation draws from its pair's spread: one draw per pair, with a
    /// seeded generator, lands within the windows in about the stated shares.
    #[test]
    fn drawn_delays_fall_in_the_windows_in_the_documented_shares() {
        let mut rng = SplitMix64(42);
        let pairs = all_pairs();
        let (mut fast, mut slow, mut never) = (0u64, 0u64, 0u64);
        for (s, c) in &pairs {
            match Profile::of(s, *c).arrival.draw(|below| rng.below(below)) {
                Some(d) if d <= Duration::from_secs(60) => {
                    assert!(d >= Duration::from_secs(5), "{d:?}");
                    fast += 1;
                }
                Some(d) => {
                    assert!(d >= Duration::from_secs(120), "{d:?}");
                    assert!(d <= Duration::from_secs(600), "{d:?}");
                    slow += 1;
                }
                None => never += 1,
            }
        }
        let n = pairs.len() as u64;
        let (fast, slow, never) = (fast * 1_000 / n, slow * 1_000 / n, never * 1_000 / n);
        println!("drawn: fast {fast} slow {slow} never {never}");
        assert!((700..=760).contains(&fast), "fast {fast}");
        assert!((150..=200).contains(&slow), "slow {slow}");
        assert!((70..=110).contains(&never), "never {never}");
    }

    #[test]
    fn phone_numbers_carry_the_dial_code_and_a_plausible_length_for_every_country() {
        let mut rng = SplitMix64(7);
        for c in Catalog::shipped().countries() {
            for _ in 0..20 {
                let phone = phone_number(c.iso2, |below| rng.below(below));
                let dial = c.dial_code.to_string();
                let national = phone.strip_prefix(&dial).expect("the dial code first");
                assert!(phone.bytes().all(|b| b.is_ascii_digit()), "{phone}");
                assert!(
                    (10..=13).contains(&phone.len()),
                    "{}: {phone}",
                    c.iso2.as_str()
                );
                assert!(!national.starts_with('0'), "{phone}");
            }
        }
        let british = phone_number(country("GB"), |below| rng.below(below));
        assert!(
            british.starts_with("447") && british.len() == 12,
            "{british}"
        );
        let indonesian = phone_number(country("ID"), |below| rng.below(below));
        assert!(
            indonesian.starts_with("628") && indonesian.len() == 13,
            "{indonesian}"
        );
    }

    #[test]
    fn prices_follow_the_country_tiers_and_the_service_weights() {
        let cost = |s: &str, c: &str| Profile::of(&service(s), country(c)).cost_micros(100_000);
        assert!(cost("tg", "AQ") > cost("tg", "ID"));
        assert!(cost("tg", "VA") > cost("tg", "US"));
        assert!(cost("tg", "US") > cost("tg", "BR"));
        assert!(cost("tg", "BR") > cost("tg", "ID"));
        assert!(cost("wa", "GB") > cost("wa", "PL"));
        // A major service costs more than a minor one in every country.
        for c in Catalog::shipped().countries() {
            let c = c.iso2.as_str();
            for major in ["tg", "wa", "go", "fb", "ig"] {
                assert!(cost(major, c) > cost("ub", c), "{major} {c}");
            }
        }
    }

    /// The three embedded upstreams' base costs (sim-budget, sim-steady,
    /// sim-express) keep their order on every pair.
    #[test]
    fn every_pair_keeps_the_order_of_the_upstreams_base_costs() {
        for (s, c) in all_pairs() {
            let p = Profile::of(&s, c);
            let (budget, steady, express) = (
                p.cost_micros(60_000),
                p.cost_micros(100_000),
                p.cost_micros(150_000),
            );
            assert!(budget < steady && steady < express, "{s:?} {c:?}");
            assert!(budget > 0);
        }
    }

    /// The hash is FNV-1a over the codes: these values are the same on every
    /// machine and every run (a change here changes docs/SIMULATOR.md).
    #[test]
    fn profiles_are_pinned() {
        let tg_id = Profile::of(&service("tg"), country("ID"));
        assert_eq!(tg_id.tier, CountryTier::Cheap);
        assert_eq!(tg_id.cost_micros(100_000), 216_000);
        assert_eq!(tg_id.stock, 754_791);
        let wa_gb = Profile::of(&service("wa"), country("GB"));
        assert_eq!(
            (wa_gb.tier, wa_gb.cost_micros(60_000)),
            (CountryTier::Expensive, 518_000)
        );
        let tg_aq = Profile::of(&service("tg"), country("AQ"));
        assert_eq!((tg_aq.stock, tg_aq.cost_micros(100_000)), (0, 2_060_000));
        let tg_de = Profile::of(&service("tg"), country("DE"));
        assert_eq!((tg_de.stock, tg_de.arrival), (557_838, Arrival::GOOD));
    }

    #[test]
    fn the_fixed_pairs_have_their_fixed_behaviour() {
        let p = |s: &str, c: &str| Profile::of(&service(s), country(c));
        let fast = p("tg", "ID").arrival;
        assert_eq!(
            (fast.fast_per_mille, fast.fast_ms),
            (1_000, (5_000, 15_000))
        );
        let slow = p("wa", "GB").arrival;
        assert_eq!(
            (slow.slow_per_mille, slow.slow_ms),
            (1_000, (240_000, 600_000))
        );
        assert_eq!(p("ig", "BR").arrival.never_per_mille(), 1_000);
        assert_eq!(p("tg", "AQ").stock, 0);
        for (s, c) in [("tg", "ID"), ("wa", "GB"), ("ig", "BR")] {
            assert!(p(s, c).stock >= 200_000, "{s} {c}");
        }
    }
}
