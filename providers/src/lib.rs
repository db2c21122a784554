//! Adapters to the outside world: SMS upstreams, routing, the payment gateway, the mailer.
