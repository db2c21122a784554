//! The catalog: countries (ISO 3166-1 alpha-2), services, and sell prices with stock.

use actix_web::{web, HttpResponse};
use nexus_core::domain::order::{CountryCode, OrderError, ServiceCode};
use serde::Deserialize;

use super::error::{ApiError, Problem};
use super::route::{Auth, Method, Op, Route};
use super::schema::{
    array_of, country_code, integer, items_of, list_params, money, nullable, obj, query_param,
    required_query_param, service_code, string, string_or_null,
};
use super::state::AppState;
use super::wallet::PageLimit;
use serde_json::json;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/v1/catalog/countries",
        handler: |route| route.to(countries),
        doc: || Op {
            summary: "Countries",
            tag: "catalog",
            auth: Auth::None,
            params: vec![],
            body: None,
            success: (
                200,
                "Countries",
                Some(items_of(obj(
                    &["code", "name", "dial_code"],
                    json!({ "code": string(), "name": string(), "dial_code": string() }),
                ))),
            ),
            errors: vec![],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/catalog/services",
        handler: |route| route.to(services),
        doc: || Op {
            summary: "Services",
            tag: "catalog",
            auth: Auth::None,
            params: vec![],
            body: None,
            success: (
                200,
                "Services",
                Some(items_of(obj(
                    &["code", "name"],
                    json!({ "code": string(), "name": string() }),
                ))),
            ),
            errors: vec![],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/catalog/prices",
        handler: |route| route.to(prices),
        doc: || Op {
            summary: "Price and stock of one service in one country",
            tag: "catalog",
            auth: Auth::None,
            params: vec![
                required_query_param("country", "ISO country code.", country_code()),
                required_query_param("service", "Service code.", service_code()),
            ],
            body: None,
            success: (
                200,
                "One item; `price: null` and `stock: 0` when no upstream has numbers",
                Some(items_of(obj(
                    &["service", "country", "price", "stock"],
                    json!({ "service": string(), "country": string(),
                        "price": nullable(money()), "stock": integer() }),
                ))),
            ),
            errors: vec![
                Problem::InvalidQuery,
                Problem::UnknownService,
                Problem::UnknownCountry,
            ],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/catalog/availability",
        handler: |route| route.to(availability),
        doc: || Op {
            summary: "Availability: success rate and time to code per route",
            tag: "catalog",
            auth: Auth::None,
            params: {
                let mut p = vec![
                    query_param("country", "ISO country code.", country_code()),
                    query_param("service", "Service code.", service_code()),
                ];
                p.extend(list_params(AVAILABILITY_DEFAULT_PAGE));
                p
            },
            body: None,
            success: (
                200,
                "Page",
                Some(obj(
                    &["items", "next_cursor"],
                    json!({ "items": array_of(obj(
                        &["service", "country", "orders", "successes", "success_rate_bp",
                          "median_time_to_code_secs"],
                        json!({ "service": string(), "country": string(),
                            "orders": integer(), "successes": integer(),
                            "success_rate_bp": { "type": "integer", "minimum": 0, "maximum": 10000,
                                "description": "Basis points." },
                            "median_time_to_code_secs": { "type": ["integer", "null"] } }))),
                        "next_cursor": string_or_null() }),
                )),
            ),
            errors: vec![
                Problem::InvalidQuery,
                Problem::InvalidCursor,
                Problem::UnknownService,
                Problem::UnknownCountry,
            ],
        },
    },
];

async fn countries(state: web::Data<AppState>) -> HttpResponse {
    let items: Vec<serde_json::Value> = state
        .catalog
        .countries()
        .iter()
        .map(|c| serde_json::json!({ "code": c.iso2.as_str(), "name": c.name, "dial_code": c.dial_code.to_string() }))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "items": items }))
}

async fn services(state: web::Data<AppState>) -> HttpResponse {
    let items: Vec<serde_json::Value> = state
        .catalog
        .services()
        .iter()
        .map(|s| serde_json::json!({ "code": s.code.as_str(), "name": s.name }))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "items": items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceQuery {
    service: String,
    country: String,
}

/// The sell price and stock for one (service, country), from the upstreams' offers.
async fn prices(
    state: web::Data<AppState>,
    query: web::Query<PriceQuery>,
) -> Result<HttpResponse, ApiError> {
    let service = ServiceCode::new(&query.service).map_err(ApiError::from)?;
    let country = CountryCode::new(&query.country).map_err(ApiError::from)?;
    if !state.catalog.is_known_service(service.as_str()) {
        return Err(OrderError::InvalidService.into());
    }
    if !state.catalog.is_known_country(country) {
        return Err(OrderError::InvalidCountry.into());
    }
    let item = match state.router.quote(&service, country).await {
        Some(quote) => serde_json::json!({
            "service": service.as_str(), "country": country.as_str(),
            "price": state.pricing.sell_price(quote.cost).to_string(), "stock": quote.stock,
        }),
        None => {
            serde_json::json!({ "service": service.as_str(), "country": country.as_str(), "price": null, "stock": 0 })
        }
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": [item] })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AvailabilityQuery {
    service: Option<String>,
    country: Option<String>,
    cursor: Option<String>,
    limit: Option<PageLimit>,
}

/// Availability answers per page by default (at most [`PageLimit`]'s bound).
pub(super) const AVAILABILITY_DEFAULT_PAGE: usize = 50;

/// One (service, country) over every provider.
#[derive(Debug, Default, PartialEq)]
struct Availability {
    orders: u64,
    successes: u64,
    /// (median seconds, successes) of each provider with codes.
    medians: Vec<(i64, u64)>,
}

impl Availability {
    fn add(&mut self, route: &nexus_projections::catalog::RouteStats) {
        self.orders += route.orders;
        self.successes += route.successes;
        if let Some(median) = route.median_time_to_code_secs {
            self.medians.push((median, route.successes.max(1)));
        }
    }

    /// The median over providers: the providers' medians weighted by their
    /// successes (exact for one provider; an estimate for several, since only
    /// each provider's median is kept).
    fn median_time_to_code_secs(&self) -> Option<i64> {
        let mut medians = self.medians.clone();
        medians.sort_unstable();
        let total: u64 = medians.iter().map(|(_, weight)| weight).sum();
        let half = total.div_ceil(2);
        let mut seen = 0u64;
        for (median, weight) in medians {
            seen += weight;
            if seen >= half {
                return Some(median);
            }
        }
        None
    }

    /// Successes per settled order in basis points (10000 = every order).
    fn success_rate_bp(&self) -> u64 {
        (self.successes * 10_000)
            .checked_div(self.orders)
            .unwrap_or(0)
    }
}

/// Public: per (service, country), the orders settled since the log began, the
/// share that got a code, and the median time from the number to the code; from
/// the catalog statistics read model (routes with an unknown service or country
/// are left out). Filters `service` and `country`; pages by `cursor`
/// (`service/country` of the last item) and `limit` (at most 100).
async fn availability(
    state: web::Data<AppState>,
    query: web::Query<AvailabilityQuery>,
) -> Result<HttpResponse, ApiError> {
    let service = query
        .service
        .as_deref()
        .map(ServiceCode::new)
        .transpose()
        .map_err(ApiError::from)?;
    let country = query
        .country
        .as_deref()
        .map(CountryCode::new)
        .transpose()
        .map_err(ApiError::from)?;
    let after = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(
            text.split_once('/')
                .map(|(s, c)| (s.to_owned(), c.to_owned()))
                .ok_or_else(|| {
                    ApiError::new(
                        Problem::InvalidCursor,
                        "the cursor is not one this API gave",
                    )
                })?,
        ),
    };
    let limit = PageLimit::or(query.limit, AVAILABILITY_DEFAULT_PAGE);
    let view = state
        .read_models
        .catalog()
        .map_err(|e| ApiError::internal(&e))?;
    let routes = match (&service, &country) {
        (Some(s), Some(c)) => view.providers_for(s.as_str(), c.as_str()),
        _ => view.routes(),
    }
    .map_err(|e| ApiError::internal(&e))?;
    let mut grouped: std::collections::BTreeMap<(String, String), Availability> =
        std::collections::BTreeMap::new();
    for route in &routes {
        let (Some(s), Some(c)) = (&route.key.service, &route.key.country) else {
            continue;
        };
        if service.as_ref().is_some_and(|want| want.as_str() != s)
            || country.as_ref().is_some_and(|want| want.as_str() != c)
        {
            continue;
        }
        grouped
            .entry((s.clone(), c.clone()))
            .or_default()
            .add(route);
    }
    let start = match &after {
        Some(key) => std::ops::Bound::Excluded(key.clone()),
        None => std::ops::Bound::Unbounded,
    };
    let page: Vec<_> = grouped
        .range((start, std::ops::Bound::Unbounded))
        .take(limit)
        .collect();
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(|((s, c), _)| format!("{s}/{c}")))
        .flatten();
    let items: Vec<serde_json::Value> = page
        .iter()
        .map(|((s, c), a)| {
            serde_json::json!({
                "service": s,
                "country": c,
                "orders": a.orders,
                "successes": a.successes,
                "success_rate_bp": a.success_rate_bp(),
                "median_time_to_code_secs": a.median_time_to_code_secs(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next_cursor })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_projections::catalog::{RouteKey, RouteStats};

    fn route(provider: &str, orders: u64, successes: u64, median: Option<i64>) -> RouteStats {
        RouteStats {
            key: RouteKey {
                service: Some("tg".into()),
                country: Some("DE".into()),
                provider: Some(provider.into()),
            },
            orders,
            successes,
            failures: orders - successes,
            median_time_to_code_secs: median,
        }
    }

    #[test]
    fn availability_sums_providers_and_weights_their_medians() {
        let mut a = Availability::default();
        assert_eq!(a.success_rate_bp(), 0);
        assert_eq!(a.median_time_to_code_secs(), None);
        a.add(&route("a", 10, 9, Some(4)));
        assert_eq!(a.median_time_to_code_secs(), Some(4));
        a.add(&route("b", 10, 1, Some(90)));
        a.add(&route("c", 5, 0, None));
        assert_eq!((a.orders, a.successes), (25, 10));
        assert_eq!(a.success_rate_bp(), 4_000);
        // Nine of ten codes came through the fast provider.
        assert_eq!(a.median_time_to_code_secs(), Some(4));
    }
}
