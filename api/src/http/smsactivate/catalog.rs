//! Catalog actions: `getCountries`, `getServicesList`, `getOperators`, `getPrices`.
//! Countries are SMS-Activate numeric ids: only the id Nexus buys under for each
//! country is offered (not the virtual alternates).

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use nexus_core::domain::order::{CountryCode, ServiceCode};
use serde::Serialize;

use super::answer::{json, Decimal, Refusal};
use super::Params;
use crate::http::state::AppState;

/// Most (service, country) pairs one `getPrices` quotes: one service in every
/// country, or every service in one country, fits; naming neither does not.
pub const MAX_PRICE_PAIRS: usize = 256;
/// Quotes asked of the router at once.
const QUOTES_IN_FLIGHT: usize = 16;
/// The currency of every amount: US dollars (ISO 4217 numeric).
pub const CURRENCY_USD: u16 = 840;

/// The SMS-Activate id Nexus buys under, as a client names it, and its country.
pub fn country_of_id(state: &AppState, raw: &str) -> Option<(u32, CountryCode)> {
    let id: u32 = raw.trim().parse().ok()?;
    let iso = state.catalog.country_from_sms_activate(id)?;
    (state.catalog.sms_activate_country(iso) == Some(id)).then_some((id, iso))
}

/// Every country on offer: (SMS-Activate id, ISO code, English name), by id.
fn offered_countries(state: &AppState) -> Vec<(u32, CountryCode, &str)> {
    state
        .catalog
        .sms_activate_countries()
        .iter()
        .filter(|c| state.catalog.sms_activate_country(c.iso2) == Some(c.id))
        .filter_map(|c| {
            let country = state.catalog.country(c.iso2)?;
            Some((c.id, c.iso2, country.name.as_str()))
        })
        .collect()
}

#[derive(Serialize)]
struct CountryItem<'a> {
    id: u32,
    rus: &'a str,
    eng: &'a str,
    chn: &'a str,
    visible: u8,
    retry: u8,
    rent: u8,
}

/// `{"<id>": {id, rus, eng, chn, visible, retry, rent}}` (names in English only).
pub fn countries(state: &AppState) -> HttpResponse {
    let items: BTreeMap<u32, CountryItem<'_>> = offered_countries(state)
        .into_iter()
        .map(|(id, _, name)| {
            let item = CountryItem {
                id,
                rus: name,
                eng: name,
                chn: name,
                visible: 1,
                retry: 1,
                rent: 0,
            };
            (id, item)
        })
        .collect();
    json(&items)
}

#[derive(Serialize)]
struct ServiceItem<'a> {
    code: &'a str,
    name: &'a str,
}

/// A bare list `[{code, name}]`: the shape herosms reads (the SMS-Activate
/// envelope `{"status":"success","services":[…]}` fails its validation, see
/// PROTOCOLS 6.6).
pub fn services(state: &AppState) -> HttpResponse {
    let items: Vec<ServiceItem<'_>> = state
        .catalog
        .services()
        .iter()
        .map(|s| ServiceItem {
            code: s.code.as_str(),
            name: &s.name,
        })
        .collect();
    json(&items)
}

/// `{"status":"success","countryOperators":{"<id>":["any"]}}`: upstreams pick the
/// operator, so `any` is the only one.
pub fn operators(state: &AppState, params: &Params) -> Result<HttpResponse, Refusal> {
    let ids: Vec<u32> = match params.non_empty("country") {
        Some(raw) => vec![country_of_id(state, raw).ok_or(Refusal::WrongCountry)?.0],
        None => offered_countries(state)
            .into_iter()
            .map(|(id, _, _)| id)
            .collect(),
    };
    let operators: BTreeMap<u32, [&str; 1]> = ids.into_iter().map(|id| (id, ["any"])).collect();
    Ok(json(&serde_json::json!({
        "status": "success",
        "countryOperators": operators,
    })))
}

#[derive(Serialize)]
struct PriceEntry {
    cost: Decimal,
    count: u64,
    #[serde(rename = "physicalCount")]
    physical_count: u64,
}

/// `{"<country id>": {"<service>": {cost, count, physicalCount}}}` for the pairs
/// with stock now. `service` and `country` narrow it; one of them is required
/// (at most [`MAX_PRICE_PAIRS`] pairs are quoted).
pub async fn prices(state: &AppState, params: &Params) -> Result<HttpResponse, Refusal> {
    let services: Vec<ServiceCode> = match params.non_empty("service") {
        Some(raw) => {
            let service = state
                .catalog
                .service(raw)
                .ok_or(Refusal::BadService)?
                .code
                .clone();
            vec![service]
        }
        None => state
            .catalog
            .services()
            .iter()
            .map(|s| s.code.clone())
            .collect(),
    };
    let countries: Vec<(u32, CountryCode)> = match params.non_empty("country") {
        Some(raw) => vec![country_of_id(state, raw).ok_or(Refusal::WrongCountry)?],
        None => offered_countries(state)
            .into_iter()
            .map(|(id, iso, _)| (id, iso))
            .collect(),
    };
    let pairs: Vec<(ServiceCode, u32, CountryCode)> = countries
        .iter()
        .flat_map(|&(id, iso)| services.iter().map(move |s| (s.clone(), id, iso)))
        .collect();
    if pairs.len() > MAX_PRICE_PAIRS {
        return Err(Refusal::BadService);
    }
    let mut table: BTreeMap<u32, BTreeMap<String, PriceEntry>> = BTreeMap::new();
    for chunk in pairs.chunks(QUOTES_IN_FLIGHT) {
        let mut quotes = tokio::task::JoinSet::new();
        for (service, id, iso) in chunk.iter().cloned() {
            let router = state.router.clone();
            quotes.spawn(async move {
                let quote = router.quote(&service, iso).await;
                (service, id, quote)
            });
        }
        while let Some(done) = quotes.join_next().await {
            let (service, id, quote) = done.map_err(|e| super::internal(&e))?;
            if let Some(quote) = quote {
                table.entry(id).or_default().insert(
                    service.as_str().to_owned(),
                    PriceEntry {
                        cost: Decimal(state.pricing.sell_price(quote.cost)),
                        count: quote.stock,
                        physical_count: quote.stock,
                    },
                );
            }
        }
    }
    Ok(json(&table))
}
