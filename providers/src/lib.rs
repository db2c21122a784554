//! Adapters to the outside world: SMS upstreams, routing and failover, the
//! fulfilment worker, the payment gateway, the mailer.

pub mod catalog;
pub mod code_extract;
pub mod customer_webhooks;
pub mod fulfilment;
pub mod gateway;
pub mod herosms;
pub mod inbound;
pub mod mailer;
pub mod notifier;
pub mod proxnum;
pub mod pvapins;
pub mod router;
pub mod simulator;
pub mod smscode;
pub mod sweep;
pub mod upstream;
mod wire;
