//! The normalized catalog: countries keyed by ISO 3166-1 alpha-2 (all 249
//! officially assigned codes, with English short names and E.164 calling codes),
//! Nexus's service codes (the SMS-Activate short codes), and the SMS-Activate
//! numeric country ids mapped onto both.
//!
//! The tables ship inside the binary (`include_str!` of `providers/data/*.tsv`,
//! see the README there) and are parsed once. An upstream's own codes are mapped
//! through here; a code the catalog does not know is skipped and counted in a
//! [`MappingReport`], never guessed.

use std::collections::HashMap;
use std::sync::OnceLock;

use nexus_core::domain::order::{CountryCode, ServiceCode};

const ISO_COUNTRIES_TSV: &str = include_str!("../data/iso3166-countries.tsv");
const SA_COUNTRIES_TSV: &str = include_str!("../data/sms-activate-countries.tsv");
const SA_SERVICES_TSV: &str = include_str!("../data/sms-activate-services.tsv");

/// At most this many unknown upstream codes are kept as samples in a report.
const MAX_UNKNOWN_SAMPLES: usize = 16;

/// One ISO 3166-1 country.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Country {
    pub iso2: CountryCode,
    /// The English short name.
    pub name: String,
    /// The E.164 country calling code, digits only (`49`, `1`, `7`); the primary
    /// one where a territory has several or none (see the data file's header).
    pub dial_code: u16,
}

/// One of Nexus's service codes (an SMS-Activate short code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub code: ServiceCode,
    pub name: String,
}

/// One SMS-Activate (and HeroSMS) numeric country id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsActivateCountry {
    pub id: u32,
    /// As the table gives it; may be a code outside the ISO catalog (`XK`).
    pub iso2: CountryCode,
    pub name: String,
    pub note: String,
    /// Virtual numbers (SMS-Activate 12 "USA (virtual)"): bought only on request.
    pub is_virtual: bool,
}

/// What mapping an upstream's codes skipped. Unknown codes are counted, never
/// guessed; a few of them are kept as samples for the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappingReport {
    /// Upstream country ids the catalog does not know (or whose ISO code is not
    /// an ISO 3166-1 entry, like SMS-Activate 203 `XK`).
    pub skipped_countries: u64,
    /// Upstream service codes that are not Nexus service codes.
    pub skipped_services: u64,
    /// Known ids that are not the one Nexus buys under for their country (the
    /// virtual USA id 12 next to 187): left out, not unknown.
    pub alternate_countries: u64,
    /// Up to 16 of the unknown codes, as `country:<raw>` / `service:<raw>`.
    pub unknown_samples: Vec<String>,
}

impl MappingReport {
    /// True when nothing was skipped as unknown.
    pub fn is_clean(&self) -> bool {
        self.skipped_countries == 0 && self.skipped_services == 0
    }

    /// Adds another report's counts (and samples, up to the limit).
    pub fn merge(&mut self, other: &MappingReport) {
        self.skipped_countries += other.skipped_countries;
        self.skipped_services += other.skipped_services;
        self.alternate_countries += other.alternate_countries;
        for sample in &other.unknown_samples {
            self.sample(sample.clone());
        }
    }

    fn sample(&mut self, text: String) {
        if self.unknown_samples.len() < MAX_UNKNOWN_SAMPLES && !self.unknown_samples.contains(&text)
        {
            self.unknown_samples.push(text);
        }
    }

    fn skip_country(&mut self, raw: &str) {
        self.skipped_countries += 1;
        self.sample(format!("country:{}", clip(raw)));
    }

    fn skip_service(&mut self, raw: &str) {
        self.skipped_services += 1;
        self.sample(format!("service:{}", clip(raw)));
    }
}

/// Upstream codes go into logs: keep them short and printable.
fn clip(raw: &str) -> String {
    raw.chars()
        .take(24)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A data table that does not parse (only ever seen with edited data: the shipped
/// tables are checked by the unit tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}, line {line}: {reason}")]
pub struct CatalogError {
    pub table: &'static str,
    pub line: usize,
    pub reason: String,
}

/// The catalog. Build it once ([`Catalog::shipped`]) and share it.
#[derive(Clone, Debug)]
pub struct Catalog {
    countries: Vec<Country>,
    country_index: HashMap<CountryCode, usize>,
    services: Vec<Service>,
    service_index: HashMap<String, usize>,
    sa_countries: Vec<SmsActivateCountry>,
    sa_index: HashMap<u32, usize>,
    /// ISO code → the SMS-Activate id Nexus buys under.
    sa_preferred: HashMap<CountryCode, u32>,
}

impl Catalog {
    /// The catalog built from the tables shipped in the binary, parsed on first use.
    pub fn shipped() -> &'static Catalog {
        static SHIPPED: OnceLock<Catalog> = OnceLock::new();
        SHIPPED.get_or_init(|| {
            Catalog::from_tsv(ISO_COUNTRIES_TSV, SA_COUNTRIES_TSV, SA_SERVICES_TSV)
                .expect("the shipped catalog tables parse (checked by the unit tests)")
        })
    }

    /// Builds a catalog from the three tables' text (formats as in
    /// `providers/data/README.md`).
    pub fn from_tsv(
        iso_countries: &str,
        sa_countries: &str,
        sa_services: &str,
    ) -> Result<Catalog, CatalogError> {
        let countries = parse_countries(iso_countries)?;
        let country_index = countries
            .iter()
            .enumerate()
            .map(|(i, c)| (c.iso2, i))
            .collect();
        let services = parse_services(sa_services)?;
        let service_index = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.code.as_str().to_owned(), i))
            .collect();
        let sa_countries = parse_sa_countries(sa_countries)?;
        let sa_index = sa_countries
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut catalog = Catalog {
            countries,
            country_index,
            services,
            service_index,
            sa_countries,
            sa_index,
            sa_preferred: HashMap::new(),
        };
        catalog.sa_preferred = catalog.preferred_sa_ids();
        Ok(catalog)
    }

    /// Where several ids map to one ISO code, the one Nexus buys under: not
    /// virtual first, then not marked unconfirmed, then the lowest id.
    fn preferred_sa_ids(&self) -> HashMap<CountryCode, u32> {
        let rank = |c: &SmsActivateCountry| {
            let unconfirmed = c.note.to_ascii_lowercase().starts_with("unconfirmed");
            (c.is_virtual, unconfirmed, c.id)
        };
        let mut preferred: HashMap<CountryCode, &SmsActivateCountry> = HashMap::new();
        for row in &self.sa_countries {
            if !self.country_index.contains_key(&row.iso2) {
                continue;
            }
            let entry = preferred.entry(row.iso2).or_insert(row);
            if rank(row) < rank(entry) {
                *entry = row;
            }
        }
        preferred.into_iter().map(|(iso, c)| (iso, c.id)).collect()
    }

    /// All countries, ordered by ISO code.
    pub fn countries(&self) -> &[Country] {
        &self.countries
    }

    pub fn country(&self, iso2: CountryCode) -> Option<&Country> {
        self.country_index.get(&iso2).map(|&i| &self.countries[i])
    }

    pub fn is_known_country(&self, iso2: CountryCode) -> bool {
        self.country_index.contains_key(&iso2)
    }

    /// Nexus's services, ordered as in the table.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn service(&self, code: &str) -> Option<&Service> {
        self.service_index.get(code).map(|&i| &self.services[i])
    }

    pub fn is_known_service(&self, code: &str) -> bool {
        self.service_index.contains_key(code)
    }

    /// Every SMS-Activate id in the table, ordered by id.
    pub fn sms_activate_countries(&self) -> &[SmsActivateCountry] {
        &self.sa_countries
    }

    /// The SMS-Activate id Nexus buys under for a country: where two ids map to
    /// one ISO code (187 "USA" and 12 "USA (virtual)"), the one not marked
    /// virtual.
    pub fn sms_activate_country(&self, iso2: CountryCode) -> Option<u32> {
        self.sa_preferred.get(&iso2).copied()
    }

    /// The virtual-number id for a country, if the table has one (12 for US).
    pub fn sms_activate_virtual_country(&self, iso2: CountryCode) -> Option<u32> {
        self.sa_countries
            .iter()
            .find(|c| c.iso2 == iso2 && c.is_virtual && self.is_known_country(iso2))
            .map(|c| c.id)
    }

    /// The ISO country of any SMS-Activate id (virtual ones included), if that
    /// country is in the ISO catalog.
    pub fn country_from_sms_activate(&self, id: u32) -> Option<CountryCode> {
        let row = &self.sa_countries[*self.sa_index.get(&id)?];
        self.is_known_country(row.iso2).then_some(row.iso2)
    }

    /// Maps a country id as an upstream wrote it (`"187"`) for offers: only the id
    /// Nexus buys under yields its country. An unknown id is counted in
    /// `skipped_countries`, a known alternate (virtual) id in
    /// `alternate_countries`.
    pub fn map_sms_activate_country(
        &self,
        raw: &str,
        report: &mut MappingReport,
    ) -> Option<CountryCode> {
        let iso = raw
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(|id| Some((id, self.country_from_sms_activate(id)?)));
        match iso {
            None => {
                report.skip_country(raw);
                None
            }
            Some((id, iso)) if self.sms_activate_country(iso) == Some(id) => Some(iso),
            Some(_) => {
                report.alternate_countries += 1;
                None
            }
        }
    }

    /// Maps an upstream's service code; one that is not a Nexus service code is
    /// counted in `skipped_services`.
    pub fn map_service(&self, raw: &str, report: &mut MappingReport) -> Option<ServiceCode> {
        match self.service(raw) {
            Some(service) => Some(service.code.clone()),
            None => {
                report.skip_service(raw);
                None
            }
        }
    }
}

/// The data lines of a table (comments and blank lines dropped), after checking
/// the header: `(line number, fields)`.
fn rows<'a>(
    table: &'static str,
    text: &'a str,
    header: &[&str],
) -> Result<Vec<(usize, Vec<&'a str>)>, CatalogError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_end_matches('\r')))
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'));
    let error = |line: usize, reason: String| CatalogError {
        table,
        line,
        reason,
    };
    match lines.next() {
        Some((_, line)) if line.split('\t').eq(header.iter().copied()) => {}
        Some((n, _)) => return Err(error(n, format!("the header must be {header:?}"))),
        None => return Err(error(0, "empty table".into())),
    }
    lines
        .map(|(n, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            // An empty trailing `note` column may be cut off by editors.
            if fields.len() == header.len()
                || (fields.len() + 1 == header.len() && header.last() == Some(&"note"))
            {
                Ok((n, fields))
            } else {
                Err(error(n, format!("expected {} columns", header.len())))
            }
        })
        .collect()
}

fn bad(table: &'static str, line: usize, reason: &str) -> CatalogError {
    CatalogError {
        table,
        line,
        reason: reason.to_owned(),
    }
}

fn parse_countries(text: &str) -> Result<Vec<Country>, CatalogError> {
    const TABLE: &str = "iso3166-countries.tsv";
    let mut countries = Vec::new();
    for (n, fields) in rows(TABLE, text, &["iso2", "name", "dial_code"])? {
        let iso2 = CountryCode::new(fields[0]).map_err(|_| bad(TABLE, n, "bad iso2"))?;
        let dial_code = fields[2]
            .parse::<u16>()
            .ok()
            .filter(|d| (1..=999).contains(d))
            .ok_or_else(|| bad(TABLE, n, "a dial code is 1 to 3 digits"))?;
        if fields[1].trim().is_empty() || fields[0] != iso2.as_str() {
            return Err(bad(TABLE, n, "an upper-case code and a name"));
        }
        countries.push(Country {
            iso2,
            name: fields[1].to_owned(),
            dial_code,
        });
    }
    countries.sort_by_key(|c| c.iso2);
    if countries.windows(2).any(|w| w[0].iso2 == w[1].iso2) {
        return Err(bad(TABLE, 0, "an ISO code is listed twice"));
    }
    Ok(countries)
}

fn parse_services(text: &str) -> Result<Vec<Service>, CatalogError> {
    const TABLE: &str = "sms-activate-services.tsv";
    let mut services: Vec<Service> = Vec::new();
    for (n, fields) in rows(TABLE, text, &["code", "name"])? {
        let code = ServiceCode::new(fields[0]).map_err(|_| bad(TABLE, n, "bad service code"))?;
        if services.iter().any(|s| s.code == code) {
            return Err(bad(TABLE, n, "a service code is listed twice"));
        }
        services.push(Service {
            code,
            name: fields[1].to_owned(),
        });
    }
    Ok(services)
}

fn parse_sa_countries(text: &str) -> Result<Vec<SmsActivateCountry>, CatalogError> {
    const TABLE: &str = "sms-activate-countries.tsv";
    let mut countries = Vec::new();
    for (n, fields) in rows(TABLE, text, &["sa_id", "iso2", "name", "note"])? {
        let id = fields[0]
            .parse::<u32>()
            .map_err(|_| bad(TABLE, n, "bad id"))?;
        let iso2 = CountryCode::new(fields[1]).map_err(|_| bad(TABLE, n, "bad iso2"))?;
        let name = fields[2].to_owned();
        let note = fields.get(3).copied().unwrap_or("").to_owned();
        // "virtual" must lead the note (187's note says "real (non-virtual)").
        let is_virtual = name.to_ascii_lowercase().contains("(virtual)")
            || note.to_ascii_lowercase().starts_with("virtual");
        countries.push(SmsActivateCountry {
            id,
            iso2,
            name,
            note,
            is_virtual,
        });
    }
    countries.sort_by_key(|c| c.id);
    if countries.windows(2).any(|w| w[0].id == w[1].id) {
        return Err(bad(TABLE, 0, "an id is listed twice"));
    }
    Ok(countries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(code: &str) -> CountryCode {
        CountryCode::new(code).unwrap()
    }

    #[test]
    fn all_249_iso_countries_with_dial_codes() {
        let catalog = Catalog::shipped();
        assert_eq!(catalog.countries().len(), 249);
        let unique: std::collections::HashSet<_> =
            catalog.countries().iter().map(|c| c.iso2).collect();
        assert_eq!(unique.len(), 249);
        let spot = [
            ("DE", "Germany", 49),
            ("US", "United States of America", 1),
            (
                "GB",
                "United Kingdom of Great Britain and Northern Ireland",
                44,
            ),
            ("RU", "Russian Federation", 7),
            ("KZ", "Kazakhstan", 7),
            ("FR", "France", 33),
            ("IN", "India", 91),
            ("CN", "China", 86),
            ("BR", "Brazil", 55),
            ("ID", "Indonesia", 62),
            ("NG", "Nigeria", 234),
            ("EG", "Egypt", 20),
            ("PR", "Puerto Rico", 1),
            ("JP", "Japan", 81),
            ("AU", "Australia", 61),
            ("UA", "Ukraine", 380),
            ("SS", "South Sudan", 211),
            ("AQ", "Antarctica", 672),
            ("VA", "Holy See", 39),
        ];
        for (iso, name, dial) in spot {
            let country = catalog.country(cc(iso)).expect(iso);
            assert_eq!(
                (country.name.as_str(), country.dial_code),
                (name, dial),
                "{iso}"
            );
        }
        assert!(
            catalog.country(cc("XK")).is_none(),
            "XK is not an ISO entry"
        );
        assert!(catalog.country(cc("ZZ")).is_none());
    }

    #[test]
    fn services_are_the_sms_activate_codes() {
        let catalog = Catalog::shipped();
        assert_eq!(catalog.services().len(), 150);
        assert!(catalog.is_known_service("tg"));
        assert_eq!(catalog.service("wa").unwrap().name, "WhatsApp");
        assert_eq!(catalog.service("dr").unwrap().name, "OpenAI (ChatGPT)");
        assert!(
            !catalog.is_known_service("ws"),
            "conflicting codes are left out"
        );
        assert!(!catalog.is_known_service("TG"));
        assert!(!catalog.is_known_service(""));
    }

    #[test]
    fn sms_activate_ids_map_both_ways() {
        let catalog = Catalog::shipped();
        assert_eq!(catalog.sms_activate_countries().len(), 203);
        for (id, iso) in [
            (0, "RU"),
            (6, "ID"),
            (16, "GB"),
            (18, "CD"),
            (150, "CG"),
            (43, "DE"),
        ] {
            assert_eq!(catalog.country_from_sms_activate(id), Some(cc(iso)));
            assert_eq!(catalog.sms_activate_country(cc(iso)), Some(id), "{iso}");
        }
        // Two ids for the US: the one not marked virtual is bought.
        assert_eq!(catalog.sms_activate_country(cc("US")), Some(187));
        assert_eq!(catalog.sms_activate_virtual_country(cc("US")), Some(12));
        assert_eq!(catalog.country_from_sms_activate(12), Some(cc("US")));
        assert_eq!(catalog.sms_activate_virtual_country(cc("DE")), None);
        // Kosovo's XK is not in the ISO catalog; unknown ids map to nothing.
        assert_eq!(catalog.country_from_sms_activate(203), None);
        assert_eq!(catalog.country_from_sms_activate(200), None);
        assert_eq!(catalog.sms_activate_country(cc("AQ")), None);
    }

    #[test]
    fn every_mapped_iso_code_is_in_the_catalog_except_kosovo() {
        let catalog = Catalog::shipped();
        let outside: Vec<_> = catalog
            .sms_activate_countries()
            .iter()
            .filter(|c| !catalog.is_known_country(c.iso2))
            .map(|c| c.id)
            .collect();
        assert_eq!(outside, vec![203]);
        let virtual_ids: Vec<_> = catalog
            .sms_activate_countries()
            .iter()
            .filter(|c| c.is_virtual)
            .map(|c| c.id)
            .collect();
        assert_eq!(virtual_ids, vec![12]);
    }

    #[test]
    fn unknown_upstream_codes_are_skipped_and_counted() {
        let catalog = Catalog::shipped();
        let mut report = MappingReport::default();
        assert_eq!(
            catalog.map_sms_activate_country("187", &mut report),
            Some(cc("US"))
        );
        assert_eq!(
            catalog.map_sms_activate_country(" 6 ", &mut report),
            Some(cc("ID"))
        );
        assert_eq!(catalog.map_sms_activate_country("12", &mut report), None);
        assert_eq!(catalog.map_sms_activate_country("999", &mut report), None);
        assert_eq!(catalog.map_sms_activate_country("203", &mut report), None);
        assert_eq!(catalog.map_sms_activate_country("usa", &mut report), None);
        assert_eq!(
            catalog.map_service("tg", &mut report).unwrap().as_str(),
            "tg"
        );
        assert_eq!(catalog.map_service("zz_new", &mut report), None);
        assert_eq!(report.skipped_countries, 3);
        assert_eq!(report.skipped_services, 1);
        assert_eq!(report.alternate_countries, 1);
        assert_eq!(
            report.unknown_samples,
            [
                "country:999",
                "country:203",
                "country:usa",
                "service:zz_new"
            ]
        );
        assert!(!report.is_clean());

        let mut total = MappingReport::default();
        total.merge(&report);
        total.merge(&report);
        assert_eq!(total.skipped_countries, 6);
        assert_eq!(total.unknown_samples.len(), 4, "samples are not repeated");
    }

    #[test]
    fn broken_tables_are_refused_with_the_line() {
        let services = "code\tname\ntg\tTelegram\n";
        let sa = "sa_id\tiso2\tname\tnote\n0\tRU\tRussia\t\n";
        let ok = "# comment\niso2\tname\tdial_code\nRU\tRussia\t7\n";
        let catalog = Catalog::from_tsv(ok, sa, services).unwrap();
        assert_eq!(catalog.sms_activate_country(cc("RU")), Some(0));

        let cases = [
            ("iso2\tname\tdial\nRU\tRussia\t7\n", sa, services, 1),
            (
                "iso2\tname\tdial_code\nRU\tRussia\tseven\n",
                sa,
                services,
                2,
            ),
            (
                "iso2\tname\tdial_code\nRU\tRussia\t7\nRU\tRussia\t7\n",
                sa,
                services,
                0,
            ),
            (
                ok,
                "sa_id\tiso2\tname\tnote\nx\tRU\tRussia\t\n",
                services,
                2,
            ),
            (ok, sa, "code\tname\nT G\tTelegram\n", 2),
        ];
        for (countries, sa, services, line) in cases {
            let error = Catalog::from_tsv(countries, sa, services).unwrap_err();
            assert_eq!(error.line, line, "{error}");
        }
    }
}
