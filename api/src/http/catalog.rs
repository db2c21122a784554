//! The catalog: countries (ISO 3166-1 alpha-2), services, and sell prices with stock.

use actix_web::{get, web, HttpResponse};
use nexus_core::domain::order::{CountryCode, OrderError, ServiceCode};
use serde::Deserialize;

use super::error::ApiError;
use super::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(countries).service(services).service(prices);
}

#[get("/v1/catalog/countries")]
async fn countries(state: web::Data<AppState>) -> HttpResponse {
    let items: Vec<serde_json::Value> = state
        .catalog
        .countries()
        .iter()
        .map(|c| serde_json::json!({ "code": c.iso2.as_str(), "name": c.name, "dial_code": c.dial_code.to_string() }))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "items": items }))
}

#[get("/v1/catalog/services")]
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
#[get("/v1/catalog/prices")]
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
