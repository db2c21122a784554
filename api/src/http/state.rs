//! What every handler shares (`web::Data<AppState>`).

use std::sync::Arc;

use nexus_core::domain::ids::AccountId;
use nexus_core::domain::money::Micros;
use nexus_core::log::{AnyLog, EventStore};
use nexus_core::service::account_service::{Accounts, AddressHolder, RecoveryMail};
use nexus_core::service::commerce_service::Commerce;
use nexus_projections::{ReadModels, Runner};
use nexus_providers::catalog::Catalog;
use nexus_providers::gateway::{IpnHandler, PaymentGateway, SimulatedGateway};
use nexus_providers::mailer::{Mail, MailId, MailKind, Mailer, Recipient};
use nexus_providers::router::Router;
use tracing::warn;

use super::sessions::SessionStore;

pub struct AppState {
    pub log: Arc<AnyLog>,
    pub accounts: Arc<Accounts<AnyLog>>,
    pub commerce: Arc<Commerce<AnyLog>>,
    pub router: Arc<Router>,
    pub catalog: &'static Catalog,
    pub pricing: Pricing,
    pub mailer: Mailer,
    pub gateway: Arc<dyn PaymentGateway>,
    /// The same gateway when it is the simulated one (the dev pay route).
    pub simulated_gateway: Option<Arc<SimulatedGateway>>,
    pub ipn: IpnHandler<AnyLog>,
    pub sessions: SessionStore,
    pub read_models: Arc<ReadModels>,
    pub runner: Arc<Runner<AnyLog>>,
    /// `Secure` on the session cookie (off only for plain-HTTP development).
    pub cookie_secure: bool,
    /// Verified upstream pushes go to the fulfilment worker through this.
    pub upstream_hints: nexus_providers::inbound::HintSender,
    /// The admin surface's token (`NEXUS_ADMIN_TOKEN`); none: admin routes are off.
    pub admin_token: Option<super::credentials::AdminToken>,
    pub legal_holds: Arc<nexus_core::service::legal_hold_service::LegalHoldService<AnyLog>>,
    pub policy: Arc<nexus_core::service::policy_service::PolicyService<AnyLog>>,
    /// The retention sweeps (run on a schedule and from the admin surface).
    pub retention: Arc<nexus_retention::Sweeper<AnyLog>>,
    /// The data exports streaming now (`GET /v1/me/export`).
    pub exports: super::Exports,
    /// Password-reset and verification-mail requests being worked on after
    /// their answer (see `recovery.rs`): at most this many at once.
    pub reset_requests: Arc<tokio::sync::Semaphore>,
    /// When this server started: what the in-memory counters (the upstreams'
    /// in `/v1/admin/providers`) count from.
    pub started_at: chrono::DateTime<chrono::Utc>,
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
    /// a failure is logged, not answered: the customer can ask for another.
    pub fn mail_verification(&self, account: AccountId, email: &str, token: &str) {
        self.spool_mail(account, email, MailId::for_verification(token), |to| {
            Mail::Verification {
                to,
                token: token.to_owned(),
                expires_at: None,
            }
        });
    }

    /// Spools a password-reset mail (to the account's address) or the notice
    /// of an e-mail change with its undo (to the old address).
    pub fn mail_recovery(&self, kind: RecoveryKind, recovery: &RecoveryMail) {
        let token = recovery.token.expose().to_owned();
        let expires_at = recovery.expires_at;
        let (mail_kind, make): (MailKind, fn(Recipient, String, _) -> Mail) = match kind {
            RecoveryKind::PasswordReset => (MailKind::PasswordReset, |to, token, expires_at| {
                Mail::PasswordReset {
                    to,
                    token,
                    expires_at,
                }
            }),
            RecoveryKind::EmailUndo => (MailKind::EmailChanged, |to, token, expires_at| {
                Mail::EmailChanged {
                    to,
                    token,
                    expires_at,
                }
            }),
        };
        let id = MailId::for_token(mail_kind, &token);
        self.spool_mail(recovery.account, &recovery.email, id, |to| {
            make(to, token, expires_at)
        });
    }

    /// Tells the holder of an address that someone tried to register with it:
    /// at most one such mail per account and hour.
    pub fn mail_registration_attempt(&self, holder: &AddressHolder) {
        let hour = chrono::Utc::now().timestamp().div_euclid(3600);
        let id = MailId::for_registration_attempt(holder.account.0, hour);
        self.spool_mail(holder.account, &holder.email, id, |to| {
            Mail::RegistrationAttempt { to }
        });
    }

    /// Spools one mail to `email`, sealed under `account`; a failure is logged
    /// (kind only), never answered.
    fn spool_mail(
        &self,
        account: AccountId,
        email: &str,
        id: MailId,
        make: impl FnOnce(Recipient) -> Mail,
    ) {
        let to = match Recipient::parse(email) {
            Ok(to) => to,
            Err(e) => return warn!(error = %e, "mail: the address does not parse"),
        };
        let mail = make(to);
        let kind = mail.kind();
        if let Err(e) = self.mailer.send(id, account, mail) {
            warn!(kind = kind.as_str(), error = %e, "mail not queued");
        }
    }
}

/// Which recovery mail [`AppState::mail_recovery`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryKind {
    PasswordReset,
    EmailUndo,
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
