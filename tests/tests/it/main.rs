//! The end-to-end tests, one binary: a module per subject. Each test starts its
//! own `nexus` process (its own data dir, port and environment), so tests of
//! different modules stay as isolated as they were in separate binaries.

mod admin;
mod api;
mod api_keys;
mod bodies;
mod data_rights;
mod e2e;
mod gate;
mod gateway_ipn;
mod journey_smtp;
mod limits;
mod mail_crash;
mod offline_commands;
mod openapi;
mod pages;
mod postgres;
mod quickstart;
mod recovery;
mod smsactivate;
mod two_factor;
mod upstream_hooks;
mod webhooks;

// The fake upstreams of the providers' tests, speaking HeroSMS's and SMSCode's
// wire formats.
#[path = "../../../providers/tests/it/fake_herosms.rs"]
mod fake_herosms;
#[path = "../../../providers/tests/it/fake_smscode.rs"]
mod fake_smscode;
