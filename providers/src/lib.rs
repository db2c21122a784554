//! Adapters to the outside world: SMS upstreams, routing and failover, the
//! fulfilment worker, the payment gateway, the mailer.

pub mod fulfilment;
pub mod router;
pub mod simulator;
pub mod upstream;
