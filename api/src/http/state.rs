//! What every handler shares (`web::Data<AppState>`).

use std::sync::Arc;

use nexus_core::domain::ids::AccountId;
use nexus_core::domain::money::Micros;
use nexus_core::log::{EventStore, SledLog};
use nexus_core::service::account_service::Accounts;
use nexus_core::service::commerce_service::Commerce;
use nexus_projections::{ReadModels, Runner};
use nexus_providers::catalog::Catalog;
use nexus_providers::gateway::{IpnHandler, PaymentGateway, SimulatedGateway};
use nexus_providers::mailer::{Mail, MailId, Mailer, Recipient};
use nexus_providers::router::Router;
use tracing::warn;

use super::sessions::SessionStore;

pub struct AppState {
    pub log: Arc<SledLog>,
    pub accounts: Arc<Accounts<SledLog>>,
    pub commerce: Arc<Commerce<SledLog>>,
    pub router: Arc<Router>,
    pub catalog: &'static Catalog,
    pub pricing: Pricing,
    pub mailer: Mailer,
    pub gateway: Arc<dyn PaymentGateway>,
    /// The same gateway when it is the simulated one (the dev pay route).
    pub simulated_gateway: Option<Arc<SimulatedGateway>>,
    pub ipn: IpnHandler<SledLog>,
    pub sessions: SessionStore,
    pub read_models: Arc<ReadModels>,
    pub runner: Arc<Runner<SledLog>>,
    /// `Secure` on the session cookie (off only for plain-HTTP development).
    pub cookie_secure: bool,
    /// Verified upstream pushes go to the fulfilment worker through this.
    pub upstream_hints: nexus_providers::inbound::HintSender,
    /// The admin surface's token (`NEXUS_ADMIN_TOKEN`); none: admin routes are off.
    pub admin_token: Option<super::credentials::AdminToken>,
    pub legal_holds: Arc<nexus_core::service::legal_hold_service::LegalHoldService<SledLog>>,
    pub policy: Arc<nexus_core::service::policy_service::PolicyService<SledLog>>,
    /// The retention sweeps (run on a schedule and from the admin surface).
    pub retention: Arc<nexus_retention::Sweeper<SledLog>>,
    /// The data exports streaming now (`GET /v1/me/export`).
    pub exports: super::Exports,
}

/// How long a list of the caller's own data waits for its read model to show
/// what the log held when the request came (read-your-writes); past that it
/// answers what the read model has.
pub const LIST_CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl AppState {
    /// Waits, at most [`LIST_CATCH_UP_WAIT`], until read model `name` has
    /// applied everything the log held now: a customer who just paid or
    /// ordered sees it in their lists. A lagging model is logged, not an error.
    pub async fn catch_up(&self, name: &'static str) {
        let position = self.log.head();
        if let Err(e) = self
            .runner
            .wait_for(Some(name), position, LIST_CATCH_UP_WAIT)
            .await
        {
            warn!(projection = name, error = %e, "a list answers from a lagging read model");
        }
    }

    /// Spools the verification mail for `account` (its id: the token's hash);
    /// a full queue is reported, the request goes on.
    pub fn mail_verification(&self, account: AccountId, email: &str, token: &str) {
        let to = match Recipient::parse(email) {
            Ok(to) => to,
            Err(e) => return warn!(error = %e, "verification mail: the address does not parse"),
        };
        let mail = Mail::Verification {
            to,
            token: token.to_owned(),
            expires_at: None,
        };
        if let Err(e) = self
            .mailer
            .send(MailId::for_verification(token), account, mail)
        {
            warn!(error = %e, "verification mail not queued");
        }
    }
}

/// Sell prices: the upstream's cost plus a markup, rounded up to a whole cent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pricing {
    pub markup_percent: u32,
}

impl Pricing {
    pub fn sell_price(&self, cost: Micros) -> Micros {
        const CENT: i128 = 10_000;
        let marked_up = i128::from(cost.0) * i128::from(100 + self.markup_percent);
        // Divide by 100 and round up to a cent in one step.
        let cents = (marked_up + 100 * CENT - 1) / (100 * CENT);
        Micros((cents * CENT) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sell_prices_round_up_to_a_cent() {
        let p = Pricing { markup_percent: 30 };
        assert_eq!(p.sell_price(Micros(100_000)), Micros(130_000));
        assert_eq!(p.sell_price(Micros(100_001)), Micros(140_000));
        assert_eq!(p.sell_price(Micros(1)), Micros(10_000));
        assert_eq!(
            Pricing { markup_percent: 0 }.sell_price(Micros(50_000)),
            Micros(50_000)
        );
    }
}
