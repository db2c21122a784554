//! The upstream adapters of the configuration file's `[[upstream]]` entries.

use anyhow::Context;

use super::{Ident, UpstreamKind, UpstreamSettings};

impl UpstreamSettings {
    /// The adapter. `sim_code_timing` is for simulators.
    pub fn build(
        &self,
        sim_code_timing: nexus_providers::simulator::CodeTiming,
    ) -> anyhow::Result<std::sync::Arc<dyn nexus_providers::upstream::Upstream>> {
        use std::collections::HashMap;
        use std::sync::Arc;

        use nexus_core::domain::order::{CountryCode, ServiceCode};
        use nexus_providers::catalog::Catalog;

        let what = format!("upstream `{}`", self.name);
        let url = || -> anyhow::Result<reqwest::Url> {
            reqwest::Url::parse(&self.base_url).with_context(|| format!("{what}: `base_url`"))
        };
        let country = |code: &str| {
            CountryCode::new(code).map_err(|_| {
                anyhow::anyhow!("{what}: `countries` has `{code}`, not an ISO country code")
            })
        };
        let service = |code: &str| {
            ServiceCode::new(code)
                .map_err(|_| anyhow::anyhow!("{what}: `services` has `{code}`, not a service code"))
        };
        let numbers =
            |pairs: &[(String, Ident)], key: &str| -> anyhow::Result<Vec<(String, u64)>> {
                pairs
                    .iter()
                    .map(|(k, v)| match v {
                        Ident::Number(n) => Ok((k.clone(), *n)),
                        Ident::Name(_) => anyhow::bail!("{what}: `{key}.{k}` must be a number"),
                    })
                    .collect()
            };
        let names =
            |pairs: &[(String, Ident)], key: &str| -> anyhow::Result<Vec<(String, String)>> {
                pairs
                    .iter()
                    .map(|(k, v)| match v {
                        Ident::Name(n) if !n.trim().is_empty() => Ok((k.clone(), n.clone())),
                        _ => anyhow::bail!("{what}: `{key}.{k}` must be a name"),
                    })
                    .collect()
            };
        Ok(match self.kind {
            UpstreamKind::Herosms => Arc::new(
                nexus_providers::herosms::HeroSms::new(
                    self.name.clone(),
                    &self.base_url,
                    self.api_key.clone(),
                    self.timeout,
                    Catalog::shipped(),
                )
                .with_context(|| what.clone())?
                .with_webhook_sources(self.webhook_sources.clone(), self.webhook_tolerance),
            ),
            UpstreamKind::Smscode => {
                let mut countries = HashMap::new();
                for (k, v) in numbers(&self.countries, "countries")? {
                    countries.insert(country(&k)?, v);
                }
                let mut platforms = HashMap::new();
                for (k, v) in numbers(&self.services, "services")? {
                    platforms.insert(service(&k)?, v);
                }
                let mut config = nexus_providers::smscode::SmsCodeConfig::new(
                    &self.name,
                    url()?,
                    &self.api_key,
                    self.idr_per_usd,
                    countries,
                    platforms,
                );
                if self.smscode_v2 {
                    config.api = nexus_providers::smscode::SmsCodeApi::V2;
                }
                config.timeout = self.timeout;
                config.connect_timeout = self.connect_timeout;
                config.webhook_secret = self.webhook_secret.clone();
                config.webhook_tolerance = self.webhook_tolerance;
                Arc::new(
                    nexus_providers::smscode::SmsCode::new(config)
                        .map_err(|e| anyhow::anyhow!("{what}: HTTP client: {}", e.without_url()))?,
                )
            }
            UpstreamKind::Pvapins => {
                let mut countries = HashMap::new();
                for (k, v) in names(&self.countries, "countries")? {
                    countries.insert(country(&k)?, v);
                }
                let mut apps = HashMap::new();
                for (k, v) in names(&self.services, "services")? {
                    apps.insert(service(&k)?, v);
                }
                let mut config = nexus_providers::pvapins::PvaPinsConfig::new(
                    &self.name,
                    url()?,
                    &self.api_key,
                    countries,
                    apps,
                );
                config.timeout = self.timeout;
                config.connect_timeout = self.connect_timeout;
                Arc::new(
                    nexus_providers::pvapins::PvaPins::new(config)
                        .map_err(|e| anyhow::anyhow!("{what}: HTTP client: {}", e.without_url()))?,
                )
            }
            UpstreamKind::Proxnum => {
                let mut config =
                    nexus_providers::proxnum::ProxnumConfig::new(&self.name, url()?, &self.api_key);
                config.timeout = self.timeout;
                config.connect_timeout = self.connect_timeout;
                Arc::new(
                    nexus_providers::proxnum::Proxnum::new(config)
                        .map_err(|e| anyhow::anyhow!("{what}: HTTP client: {}", e.without_url()))?,
                )
            }
            UpstreamKind::Simulator => {
                use nexus_providers::simulator::{Market, SimulatorConfig};
                // A healthy upstream on the embedded default's market.
                let mut config = SimulatorConfig::healthy(&self.name);
                config.code_timing = sim_code_timing;
                config.market = Market::Realistic;
                Arc::new(nexus_providers::simulator::Simulator::new(config))
            }
        })
    }
}
