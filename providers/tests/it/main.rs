//! nexus-providers' integration tests, one binary: a module per subject, and
//! the fake upstreams, the mail helpers and the store world they share.

mod customer_webhooks;
mod fulfilment;
mod gateway;
mod herosms;
mod log_capture;
mod mail_spool;
mod mailer;
mod notifier;
mod policy_notices;
mod proxnum;
mod pvapins;
mod smscode;
mod upstream_push;

mod fake_herosms;
mod fake_proxnum;
mod fake_pvapins;
mod fake_smscode;
mod mail_support;
mod store_world;
