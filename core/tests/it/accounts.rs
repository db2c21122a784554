//! Accounts through the command service on a real sled store: registration,
//! verification, login, e-mail uniqueness under races, e-mail change, deletion,
//! API keys, and no e-mail address in the raw files.
//!
//! bcrypt runs at cost 4 here, through the test-only constructor.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use nexus_core::domain::account::{
    AccountError, AccountViewStatus, ApiKeySettings, Secret, MAX_LIVE_API_KEYS,
};
use nexus_core::domain::codec::Personal;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::ids::{AccountId, ApiKeyId};
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{CancelReason, Channel, CountryCode, ServiceCode};
use nexus_core::log::{AppendRequest, EventId, EventStore, ExpectedVersion, NewEvent, StreamName};
use nexus_core::service::account_service::{
    AccountServiceError, Accounts, AccountsConfig, AccountsConfigError,
};

use nexus_testkit::{runtime, start, World, PASSWORD};

/// The address API keys are used from in these tests (no key has an allow-list).
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, AccountServiceError>) -> AccountError {
    match result {
        Err(AccountServiceError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn stream_version(w: &World, stream: &StreamName) -> u64 {
    w.store.log.stream_version(stream).await.unwrap()
}

#[test]
fn the_configuration_refuses_a_cost_below_12() {
    let w = World::new();
    let build = |cost| {
        Accounts::new(
            w.store.log.clone(),
            w.store.vault.clone(),
            AccountsConfig {
                bcrypt_cost: cost,
                ..AccountsConfig::default()
            },
        )
        .map(|a| a.bcrypt_cost())
    };
    assert_eq!(build(11), Err(AccountsConfigError::CostTooLow { cost: 11 }));
    assert_eq!(build(4), Err(AccountsConfigError::CostTooLow { cost: 4 }));
    assert_eq!(
        build(32),
        Err(AccountsConfigError::CostTooHigh { cost: 32 })
    );
    assert_eq!(build(12), Ok(12));
    assert_eq!(build(13), Ok(13));
    assert_eq!(AccountsConfig::default().bcrypt_cost, 12);
    let zero_ttl = Accounts::new(
        w.store.log.clone(),
        w.store.vault.clone(),
        AccountsConfig {
            verification_ttl: Duration::zero(),
            ..AccountsConfig::default()
        },
    );
    assert!(zero_ttl.is_err());
}

/// The production path: cost 12 (one registration and one login, about half a
/// second of bcrypt).
#[test]
fn the_default_configuration_hashes_at_cost_12() {
    let w = World::new();
    let accounts = Accounts::new(
        w.store.log.clone(),
        w.store.vault.clone(),
        AccountsConfig::default(),
    )
    .unwrap();
    runtime().block_on(async {
        let reg = accounts
            .register("zoe@example.com", PASSWORD)
            .await
            .unwrap();
        let state = accounts.load_account(reg.account).await.unwrap().state;
        let hash = state.password_hash.plain().unwrap();
        assert!(hash.starts_with("$2b$12$"), "a bcrypt hash of cost 12");
        assert_eq!(
            accounts
                .authenticate("zoe@example.com", PASSWORD)
                .await
                .unwrap()
                .account,
            reg.account
        );
    });
}

#[test]
fn register_verify_login() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("  Alice@Example.COM ", PASSWORD).await.unwrap();

        // Login before verification works and says so; any case of the address.
        let login = a.authenticate("alice@example.com", PASSWORD).await.unwrap();
        assert_eq!(login.account, reg.account);
        assert!(!login.verified);

        let view = a.account(reg.account).await.unwrap();
        assert_eq!(view.email, Personal::Plain("Alice@example.com".to_owned()));
        assert_eq!(view.status, AccountViewStatus::Active);
        assert!(!view.verified);
        assert_eq!(view.created_at, start());

        // Verify; the token works once.
        let token = reg.verification_token.expose();
        assert_eq!(a.verify_email(token).await.unwrap(), reg.account);
        assert_eq!(
            refused(a.verify_email(token).await),
            AccountError::VerificationTokenUsed
        );
        assert_eq!(
            refused(a.issue_verification(reg.account).await),
            AccountError::AlreadyVerified
        );
        let login = a.authenticate("Alice@example.com", PASSWORD).await.unwrap();
        assert!(login.verified);

        // Wrong password and unknown address: the same error.
        assert_eq!(
            refused(a.authenticate("alice@example.com", "wrong password!").await),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(a.authenticate("nobody@example.com", PASSWORD).await),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(a.authenticate("not an address", PASSWORD).await),
            AccountError::InvalidCredentials
        );

        // Garbage and forged tokens.
        for bad in ["", "x", &format!("{}.{}", reg.account, "A".repeat(43))] {
            assert_eq!(
                refused(a.verify_email(bad).await),
                AccountError::VerificationTokenInvalid
            );
        }
        let foreign = format!("{}{}", AccountId::new(), &token[32..]);
        assert_eq!(
            refused(a.verify_email(&foreign).await),
            AccountError::VerificationTokenInvalid
        );
    });
}

#[test]
fn verification_tokens_expire_and_a_new_one_replaces_the_old() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("bob@example.com", PASSWORD).await.unwrap();
        w.clock.advance(Duration::hours(24));
        assert_eq!(
            refused(a.verify_email(reg.verification_token.expose()).await),
            AccountError::VerificationTokenExpired
        );
        let fresh = a.issue_verification(reg.account).await.unwrap();
        assert_eq!(
            refused(a.verify_email(reg.verification_token.expose()).await),
            AccountError::VerificationTokenInvalid
        );
        w.clock.advance(Duration::hours(23));
        a.verify_email(fresh.expose()).await.unwrap();
        assert!(a.account(reg.account).await.unwrap().verified);
    });
}

#[test]
fn a_lost_verification_mail_is_sent_again_at_most_every_five_minutes() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("carol@example.com", PASSWORD).await.unwrap();
        // Given the registration's mail moments ago, when asked again: refused,
        // and the first token still works.
        w.clock.advance(Duration::minutes(4));
        assert_eq!(
            refused(a.resend_verification("Carol@example.com").await),
            AccountError::VerificationRecentlySent
        );
        // Five minutes on: a new token for the holder, the old one superseded.
        w.clock.advance(Duration::minutes(1));
        let (holder, token) = a
            .resend_verification("carol@example.com")
            .await
            .unwrap()
            .expect("a new token");
        assert_eq!(holder.account, reg.account);
        assert_eq!(holder.email, "carol@example.com");
        assert_eq!(
            refused(a.resend_verification("carol@example.com").await),
            AccountError::VerificationRecentlySent
        );
        assert_eq!(
            refused(a.verify_email(reg.verification_token.expose()).await),
            AccountError::VerificationTokenInvalid
        );
        a.verify_email(token.expose()).await.unwrap();
        // Verified, unknown or malformed: nothing to send, nothing said.
        w.clock.advance(Duration::minutes(10));
        for address in ["carol@example.com", "nobody@example.com", "not an address"] {
            assert!(
                a.resend_verification(address).await.unwrap().is_none(),
                "{address}"
            );
        }
    });
}

#[test]
fn registration_checks_its_input_and_refuses_a_second_registration() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let first = a.register("carol@example.com", PASSWORD).await.unwrap();
        for email in [
            "carol@example.com",
            " CAROL@EXAMPLE.COM",
            "Carol@example.com",
        ] {
            assert_eq!(
                refused(a.register(email, "another password").await),
                AccountError::EmailTaken
            );
        }
        assert!(matches!(
            refused(a.register("carol", PASSWORD).await),
            AccountError::InvalidEmail { .. }
        ));
        assert_eq!(
            refused(a.register("dave@example.com", "short").await),
            AccountError::PasswordTooShort
        );
        assert_eq!(
            refused(a.register("dave@example.com", &"p".repeat(129)).await),
            AccountError::PasswordTooLong
        );
        // Only the first registration wrote anything.
        let login = a.authenticate("carol@example.com", PASSWORD).await.unwrap();
        assert_eq!(login.account, first.account);
        assert_eq!(
            refused(
                a.authenticate("carol@example.com", "another password")
                    .await
            ),
            AccountError::InvalidCredentials
        );
        let stream = w.accounts.email_stream("carol@example.com").unwrap();
        assert_eq!(stream_version(&w, &stream).await, 1);
    });
}

/// Given two hashing slots and one account's password guessed on eight
/// connections at once, when another customer signs in meanwhile, then the
/// guesses take one slot at a time and the other sign-in finishes among the
/// first three (behind at most one guess, not behind all eight, as it did
/// when every check queued for the same slots).
#[test]
fn one_accounts_guesses_hold_one_hashing_slot_at_a_time() {
    let w = World::new();
    let config = AccountsConfig {
        hashing_concurrency: 2,
        ..AccountsConfig::default()
    };
    let accounts = Accounts::new(w.store.log.clone(), w.store.vault.clone(), config)
        .unwrap()
        .with_insecure_cost_for_tests(10)
        .with_clock(w.clock.clone());
    let accounts = Arc::new(accounts);
    runtime().block_on(async {
        accounts
            .register("target@example.com", PASSWORD)
            .await
            .unwrap();
        accounts
            .register("bystander@example.com", PASSWORD)
            .await
            .unwrap();
        let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (accounts, finished) = (accounts.clone(), finished.clone());
            tasks.push(tokio::spawn(async move {
                let guess = format!("not the password {i}");
                let result = accounts.authenticate("target@example.com", &guess).await;
                assert_eq!(refused(result), AccountError::InvalidCredentials);
                finished.lock().unwrap().push("guess");
            }));
        }
        // The guesses are all waiting before the other customer comes.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (by, done) = (accounts.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            by.authenticate("bystander@example.com", PASSWORD)
                .await
                .unwrap();
            done.lock().unwrap().push("bystander");
        }));
        for task in tasks {
            task.await.unwrap();
        }
        let order = finished.lock().unwrap().clone();
        let place = order.iter().position(|who| *who == "bystander").unwrap();
        assert!(place <= 2, "finished in the order {order:?}");
    });
}

#[test]
fn passwords_longer_than_72_bytes_count_in_full() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let long = "L".repeat(128);
        let mut other = "L".repeat(100);
        other.push_str(&"M".repeat(28));
        a.register("erin@example.com", &long).await.unwrap();
        a.authenticate("erin@example.com", &long).await.unwrap();
        assert_eq!(
            refused(a.authenticate("erin@example.com", &other).await),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(a.authenticate("erin@example.com", &long[..72]).await),
            AccountError::InvalidCredentials
        );
    });
}

#[test]
fn sixteen_concurrent_registrations_of_one_address_one_wins() {
    let w = World::new();
    runtime().block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let accounts = Arc::clone(&w.accounts);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let email = if i % 2 == 0 {
                        "race@example.com"
                    } else {
                        "RACE@example.com"
                    };
                    accounts
                        .register(email, &format!("password number {i}"))
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(reg) => winners.push(reg.account),
                Err(AccountServiceError::Refused(AccountError::EmailTaken)) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one registration wins");
        let login_account = (0..16)
            .map(|i| format!("password number {i}"))
            .collect::<Vec<_>>();
        let mut logged_in = Vec::new();
        for password in &login_account {
            if let Ok(login) = w.accounts.authenticate("race@example.com", password).await {
                logged_in.push(login.account);
            }
        }
        assert_eq!(logged_in, winners);
        let stream = w.accounts.email_stream("race@example.com").unwrap();
        assert_eq!(stream_version(&w, &stream).await, 1);
    });
}

#[test]
fn an_email_change_moves_uniqueness_atomically() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let frank = a.register("frank@old.example", PASSWORD).await.unwrap();
        a.verify_email(frank.verification_token.expose())
            .await
            .unwrap();
        let other = a.register("grace@example.com", PASSWORD).await.unwrap();

        // Taken by someone else; unchanged; invalid.
        assert_eq!(
            refused(a.change_email(frank.account, "Grace@Example.com").await),
            AccountError::EmailTaken
        );
        assert_eq!(
            refused(a.change_email(frank.account, "frank@OLD.example").await),
            AccountError::EmailUnchanged
        );
        assert!(matches!(
            refused(a.change_email(frank.account, "frank@").await),
            AccountError::InvalidEmail { .. }
        ));

        let token = a
            .change_email(frank.account, "frank@new.example")
            .await
            .unwrap()
            .verification_token;
        let view = a.account(frank.account).await.unwrap();
        assert_eq!(view.email, Personal::Plain("frank@new.example".into()));
        assert!(!view.verified, "a corrected address is verified again");
        a.verify_email(token.expose()).await.unwrap();

        // The new address logs in; the old one is free for someone else.
        assert_eq!(
            a.authenticate("frank@new.example", PASSWORD)
                .await
                .unwrap()
                .account,
            frank.account
        );
        assert_eq!(
            refused(a.authenticate("frank@old.example", PASSWORD).await),
            AccountError::InvalidCredentials
        );
        let heidi = a
            .register("frank@old.example", "heidi's password")
            .await
            .unwrap();
        assert_ne!(heidi.account, frank.account);
        assert_eq!(
            refused(a.register("frank@new.example", "someone else").await),
            AccountError::EmailTaken
        );
        assert_eq!(
            refused(a.change_email(other.account, "frank@new.example").await),
            AccountError::EmailTaken
        );

        // A change of case of the local part keeps the reservation.
        a.change_email(frank.account, "Frank@new.example")
            .await
            .unwrap();
        assert_eq!(
            a.authenticate("frank@new.example", PASSWORD)
                .await
                .unwrap()
                .account,
            frank.account
        );
    });
}

#[test]
fn password_change_needs_the_old_password() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("ivan@example.com", PASSWORD).await.unwrap();
        assert_eq!(
            refused(
                a.change_password(reg.account, "not the password", "new password 1")
                    .await
            ),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(a.change_password(reg.account, PASSWORD, "short").await),
            AccountError::PasswordTooShort
        );
        a.change_password(reg.account, PASSWORD, "new password 1")
            .await
            .unwrap();
        assert_eq!(
            refused(a.authenticate("ivan@example.com", PASSWORD).await),
            AccountError::InvalidCredentials
        );
        a.authenticate("ivan@example.com", "new password 1")
            .await
            .unwrap();
        assert_eq!(
            refused(
                a.change_password(AccountId::new(), PASSWORD, "new password 1")
                    .await
            ),
            AccountError::AccountNotFound
        );
    });
}

#[test]
fn objection_is_recorded() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("judy@example.com", PASSWORD).await.unwrap();
        assert!(!a.account(reg.account).await.unwrap().objection);
        a.set_objection(reg.account, true).await.unwrap();
        a.set_objection(reg.account, true).await.unwrap();
        assert!(a.account(reg.account).await.unwrap().objection);
        let version = stream_version(&w, &reg.account.stream()).await;
        assert_eq!(version, 3, "registered, token issued, one objection");
        a.set_objection(reg.account, false).await.unwrap();
        assert!(!a.account(reg.account).await.unwrap().objection);
    });
}

#[test]
fn deletion_disables_login_and_api_keys_and_can_be_withdrawn_for_30_days() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("mallory@example.com", PASSWORD).await.unwrap();
        let token = a.issue_verification(reg.account).await.unwrap();
        a.verify_email(token.expose()).await.unwrap();
        let key = a
            .create_api_key(reg.account, &ApiKeySettings::legacy())
            .await
            .unwrap();
        a.authenticate_api_key(key.key.expose(), LOOPBACK)
            .await
            .unwrap();

        // An active order blocks the deletion; once it is cancelled, it goes through.
        let owner = Owner::Account(reg.account);
        w.fund_in(owner, 1_000_000, "btc").await;
        let request = PlaceOrder {
            service: ServiceCode::new("wa").unwrap(),
            country: CountryCode::new("GB").unwrap(),
            channel: Channel::Sms,
            price: Micros(1_000_000),
        };
        let order = w
            .commerce
            .place_order(owner, &request, None)
            .await
            .unwrap()
            .order;
        assert_eq!(
            refused(w.accounts.request_deletion(reg.account, true).await),
            AccountError::ActiveOrders
        );
        w.commerce
            .cancel(order, Some(owner), CancelReason::Customer)
            .await
            .unwrap();
        a.authenticate("mallory@example.com", PASSWORD)
            .await
            .unwrap();

        w.accounts
            .request_deletion(reg.account, true)
            .await
            .unwrap();
        let view = a.account(reg.account).await.unwrap();
        assert_eq!(view.status, AccountViewStatus::DeletionPending);
        assert_eq!(view.deletion_due_at, Some(start() + Duration::days(30)));
        assert_eq!(
            refused(a.authenticate("mallory@example.com", PASSWORD).await),
            AccountError::AccountDisabled
        );
        // A wrong password does not learn that the account is disabled.
        assert_eq!(
            refused(
                a.authenticate("mallory@example.com", "wrong password")
                    .await
            ),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(a.authenticate_api_key(key.key.expose(), LOOPBACK).await),
            AccountError::AccountDisabled
        );
        assert_eq!(
            refused(
                a.create_api_key(reg.account, &ApiKeySettings::legacy())
                    .await
            ),
            AccountError::AccountDisabled
        );
        assert_eq!(
            refused(w.accounts.request_deletion(reg.account, true).await),
            AccountError::DeletionAlreadyRequested
        );

        w.clock.advance(Duration::days(29));
        a.withdraw_deletion(reg.account).await.unwrap();
        a.authenticate("mallory@example.com", PASSWORD)
            .await
            .unwrap();
        a.authenticate_api_key(key.key.expose(), LOOPBACK)
            .await
            .unwrap();

        w.accounts
            .request_deletion(reg.account, true)
            .await
            .unwrap();
        w.clock.advance(Duration::days(30));
        assert_eq!(
            refused(a.withdraw_deletion(reg.account).await),
            AccountError::DeletionWindowOver
        );
        assert_eq!(
            refused(a.authenticate("mallory@example.com", PASSWORD).await),
            AccountError::AccountDisabled
        );
    });
}

#[test]
fn a_key_carries_its_scope_label_and_allow_list() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("olga@example.com", PASSWORD).await.unwrap();
        let settings = ApiKeySettings::new(
            nexus_core::domain::account::ApiKeyScope::Read,
            Some("dashboard"),
            &["198.51.100.0/24".into(), "2001:db8::/32".into()],
        )
        .unwrap();
        let key = a.create_api_key(reg.account, &settings).await.unwrap();
        let inside: std::net::IpAddr = "2001:db8::7".parse().unwrap();
        let login = a
            .authenticate_api_key(key.key.expose(), inside)
            .await
            .unwrap();
        assert_eq!(login.scope, nexus_core::domain::account::ApiKeyScope::Read);
        assert_eq!(
            refused(a.authenticate_api_key(key.key.expose(), LOOPBACK).await),
            AccountError::ApiKeyIpNotAllowed
        );
        let listed = a.list_api_keys(reg.account).await.unwrap();
        assert_eq!(listed[0].label.as_deref(), Some("dashboard"));
        assert_eq!(listed[0].allowed_ips, settings.allowed_ips);
    });
}

#[test]
fn api_keys_create_authenticate_list_revoke() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("oscar@example.com", PASSWORD).await.unwrap();
        let first = a
            .create_api_key(reg.account, &ApiKeySettings::legacy())
            .await
            .unwrap();
        let second = a
            .create_api_key(reg.account, &ApiKeySettings::legacy())
            .await
            .unwrap();
        let text = first.key.expose();
        assert!(text.starts_with(&format!("nx_{}_", reg.account)));
        assert_eq!(&text[36..44], first.prefix);
        assert_eq!(format!("{:?}", first.key), "Secret(<redacted>)");

        let login = a.authenticate_api_key(text, LOOPBACK).await.unwrap();
        assert_eq!((login.account, login.key_id), (reg.account, first.id));
        assert_eq!(
            a.authenticate_api_key(second.key.expose(), LOOPBACK)
                .await
                .unwrap()
                .key_id,
            second.id
        );

        // A forged secret, a key naming another account, garbage.
        let mut forged = text.to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let elsewhere = format!("nx_{}{}", AccountId::new(), &text[35..]);
        for bad in [forged.as_str(), elsewhere.as_str(), "", "nx_", "Bearer x"] {
            assert_eq!(
                refused(a.authenticate_api_key(bad, LOOPBACK).await),
                AccountError::InvalidCredentials,
                "{bad:?}"
            );
        }

        let listed = a.list_api_keys(reg.account).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].id, first.id);
        assert_eq!(listed[0].prefix, first.prefix);
        assert!(listed.iter().all(|k| k.revoked_at.is_none()));

        a.revoke_api_key(reg.account, first.id).await.unwrap();
        assert_eq!(
            refused(a.authenticate_api_key(text, LOOPBACK).await),
            AccountError::InvalidCredentials
        );
        a.authenticate_api_key(second.key.expose(), LOOPBACK)
            .await
            .unwrap();
        assert_eq!(
            refused(a.revoke_api_key(reg.account, first.id).await),
            AccountError::ApiKeyNotFound
        );
        assert_eq!(
            refused(a.revoke_api_key(reg.account, ApiKeyId::new()).await),
            AccountError::ApiKeyNotFound
        );
        let listed = a.list_api_keys(reg.account).await.unwrap();
        assert_eq!(listed[0].revoked_at, Some(start()));
        assert_eq!(
            refused(a.list_api_keys(AccountId::new()).await),
            AccountError::AccountNotFound
        );

        // The limit counts live keys.
        for _ in 1..MAX_LIVE_API_KEYS {
            a.create_api_key(reg.account, &ApiKeySettings::legacy())
                .await
                .unwrap();
        }
        assert_eq!(
            refused(
                a.create_api_key(reg.account, &ApiKeySettings::legacy())
                    .await
            ),
            AccountError::TooManyApiKeys
        );
        a.revoke_api_key(reg.account, second.id).await.unwrap();
        a.create_api_key(reg.account, &ApiKeySettings::legacy())
            .await
            .unwrap();
    });
}

#[test]
fn concurrent_commands_on_one_account_all_land() {
    let w = World::new();
    runtime().block_on(async {
        let reg = w
            .accounts
            .register("peggy@example.com", PASSWORD)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let accounts = Arc::clone(&w.accounts);
                tokio::spawn(async move {
                    accounts
                        .create_api_key(reg.account, &ApiKeySettings::legacy())
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(AccountServiceError::Contention { .. }) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        let listed = w.accounts.list_api_keys(reg.account).await.unwrap();
        assert_eq!(listed.len(), ok);
        assert!(ok >= 1);
    });
}

#[test]
fn an_erased_account_reads_as_erased_and_cannot_log_in() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("trent@example.com", PASSWORD).await.unwrap();
        w.accounts
            .request_deletion(reg.account, true)
            .await
            .unwrap();
        w.store.vault.erase(&reg.account.subject()).unwrap();
        let view = a.account(reg.account).await.unwrap();
        assert_eq!(view.status, AccountViewStatus::Erased);
        assert_eq!(view.email, Personal::Erased);
        assert_eq!(
            refused(a.authenticate("trent@example.com", PASSWORD).await),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(a.withdraw_deletion(reg.account).await),
            AccountError::AccountErased
        );
    });
}

/// Every byte of every file under `dir`.
fn raw_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(raw_bytes_under(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_raw_files_hold_no_address_password_token_or_key() {
    const EMAIL: &str = "Victor.Unique-Needle@Example.org";
    const NEW_EMAIL: &str = "victor.second-needle@example.org";
    const MARKER: &[u8] = b"plain-payload-marker-7f3a";
    let w = World::new();
    let secrets: Vec<Secret> = runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register(EMAIL, PASSWORD).await.unwrap();
        a.verify_email(reg.verification_token.expose())
            .await
            .unwrap();
        let key = a
            .create_api_key(reg.account, &ApiKeySettings::legacy())
            .await
            .unwrap();
        let change = a.change_email(reg.account, NEW_EMAIL).await.unwrap();
        let token = change.verification_token;
        a.authenticate(NEW_EMAIL, PASSWORD).await.unwrap();
        // A plain payload, to show the search below can find what is there.
        let marker = NewEvent {
            id: EventId::new(),
            event_type: "TestMarker".into(),
            schema_version: 1,
            payload: MARKER.to_vec(),
            pii: None,
        };
        w.store
            .log
            .append(AppendRequest::single(
                StreamName::new("test-marker").unwrap(),
                ExpectedVersion::NoStream,
                vec![marker],
            ))
            .await
            .unwrap();
        let reset = a
            .request_password_reset(NEW_EMAIL)
            .await
            .unwrap()
            .expect("a reset for the account");
        vec![
            reg.verification_token,
            key.key,
            token,
            change.undo.token,
            reset.token,
        ]
    });
    let store_dir = w.dir().join("store");
    let dir = w.close();
    let raw = raw_bytes_under(&store_dir);
    assert!(contains(&raw, MARKER), "the search finds a plain payload");
    let mut needles: Vec<Vec<u8>> = vec![
        EMAIL.as_bytes().to_vec(),
        EMAIL.to_lowercase().into_bytes(),
        b"Victor.Unique-Needle".to_vec(),
        b"victor.unique-needle".to_vec(),
        NEW_EMAIL.as_bytes().to_vec(),
        b"second-needle".to_vec(),
        PASSWORD.as_bytes().to_vec(),
    ];
    for secret in &secrets {
        let text = secret.expose();
        needles.push(text.as_bytes().to_vec());
        // The secret part alone (after the account id).
        needles.push(text.as_bytes()[36..].to_vec());
    }
    for needle in &needles {
        assert!(
            !contains(&raw, needle),
            "found {:?} in the raw files",
            String::from_utf8_lossy(needle)
        );
    }
    drop(dir);
}

#[test]
fn debug_output_shows_no_secrets() {
    let w = World::new();
    runtime().block_on(async {
        let reg = w
            .accounts
            .register("wendy@example.com", PASSWORD)
            .await
            .unwrap();
        let key = w
            .accounts
            .create_api_key(reg.account, &ApiKeySettings::legacy())
            .await
            .unwrap();
        let view = w.accounts.account(reg.account).await.unwrap();
        let loaded = w.accounts.load_account(reg.account).await.unwrap();
        let shown = format!("{reg:?} {key:?} {view:?} {:?} {loaded:?}", w.accounts);
        for secret in [
            "wendy",
            PASSWORD,
            reg.verification_token.expose(),
            key.key.expose(),
            "$2b$",
        ] {
            assert!(!shown.contains(secret), "{secret:?} in {shown}");
        }
        let err = refused(
            w.accounts
                .authenticate("wendy@example.com", "bad password")
                .await,
        );
        assert!(!format!("{err} {err:?}").contains("wendy"));
    });
}

#[test]
fn the_holder_of_a_pending_deletion_can_authenticate_with_the_password_to_withdraw() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let reg = a.register("peggy@example.com", PASSWORD).await.unwrap();
        let other = a.register("quentin@example.com", PASSWORD).await.unwrap();

        // Active: the holder is the account, as a login would say.
        assert_eq!(
            a.authenticate_holder("Peggy@Example.com", PASSWORD)
                .await
                .unwrap(),
            reg.account
        );

        w.accounts
            .request_deletion(reg.account, true)
            .await
            .unwrap();
        assert_eq!(
            refused(a.authenticate("peggy@example.com", PASSWORD).await),
            AccountError::AccountDisabled
        );
        // Pending deletion: the password still names the account.
        let holder = a
            .authenticate_holder("peggy@example.com", PASSWORD)
            .await
            .unwrap();
        assert_eq!(holder, reg.account);
        assert_ne!(holder, other.account);
        a.withdraw_deletion(holder).await.unwrap();
        a.authenticate("peggy@example.com", PASSWORD).await.unwrap();

        // Wrong password, unknown or malformed address: one answer for all.
        for (email, password) in [
            ("peggy@example.com", "wrong password"),
            ("nobody@example.com", PASSWORD),
            ("not an address", PASSWORD),
        ] {
            assert_eq!(
                refused(a.authenticate_holder(email, password).await),
                AccountError::InvalidCredentials
            );
        }

        // Erased: nothing left to authenticate against.
        w.store.vault.erase(&reg.account.subject()).unwrap();
        assert_eq!(
            refused(a.authenticate_holder("peggy@example.com", PASSWORD).await),
            AccountError::InvalidCredentials
        );
    });
}

// -- erasure of a deleted account ----------------------------------------------

mod erasure {
    use super::*;
    use nexus_core::domain::account::{
        decide_create_api_key, decide_erase_account, decide_withdraw_deletion, Account,
        AccountDeletionRequested, AccountDeletionWithdrawn, AccountEmailVerified, AccountErased,
        AccountEvent, AccountRegistered, RegisteredPii, DELETION_GRACE_DAYS,
        UNVERIFIED_LAPSE_HOURS,
    };
    use nexus_core::domain::aggregate::given;
    use nexus_core::log::Direction;

    fn registered(account: AccountId, pii: Personal<RegisteredPii>) -> AccountEvent {
        AccountEvent::AccountRegistered(AccountRegistered {
            account,
            registered_at: start(),
            pii,
        })
    }

    fn plain_pii() -> Personal<RegisteredPii> {
        Personal::Plain(RegisteredPii {
            email: "erin@example.com".into(),
            password_hash: "$2b$04$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01".into(),
        })
    }

    fn verified() -> AccountEvent {
        AccountEvent::AccountEmailVerified(AccountEmailVerified {
            token_hash: [7; 32],
            at: start() + Duration::minutes(5),
        })
    }

    fn deletion_requested(at: DateTime<Utc>) -> AccountEvent {
        AccountEvent::AccountDeletionRequested(AccountDeletionRequested {
            at,
            erase_due_at: at + Duration::days(DELETION_GRACE_DAYS),
            forfeit_balance: Some(Micros(0)),
        })
    }

    fn due() -> DateTime<Utc> {
        start() + Duration::days(DELETION_GRACE_DAYS)
    }

    #[test]
    fn an_account_is_erased_once_its_deletion_is_due_and_only_once() {
        let account = AccountId::new();
        let history = vec![
            registered(account, plain_pii()),
            verified(),
            deletion_requested(start()),
        ];

        given::<Account>(history.clone())
            .when(|s| decide_erase_account(s, due() - Duration::seconds(1)))
            .then_err(AccountError::ErasureNotDue);

        let state = given::<Account>(history.clone())
            .when(|s| decide_erase_account(s, due()))
            .then(vec![AccountEvent::AccountErased(AccountErased {
                at: due(),
            })]);
        assert!(state.is_erased());
        assert_eq!(state.erased_at, Some(due()));
        assert_eq!(state.email, Personal::Erased);
        assert_eq!(state.password_hash, Personal::Erased);
        assert_eq!(state.view().unwrap().status, AccountViewStatus::Erased);

        let mut erased = history;
        erased.push(AccountEvent::AccountErased(AccountErased { at: due() }));
        given::<Account>(erased)
            .when(|s| decide_erase_account(s, due() + Duration::days(1)))
            .then_err(AccountError::AccountErased);
    }

    #[test]
    fn only_an_account_with_a_pending_deletion_can_be_erased() {
        let account = AccountId::new();
        let late = due() + Duration::days(365);
        given::<Account>(vec![])
            .when(|s| decide_erase_account(s, late))
            .then_err(AccountError::AccountNotFound);
        given::<Account>(vec![registered(account, plain_pii()), verified()])
            .when(|s| decide_erase_account(s, late))
            .then_err(AccountError::NoDeletionPending);
        given::<Account>(vec![
            registered(account, plain_pii()),
            verified(),
            deletion_requested(start()),
            AccountEvent::AccountDeletionWithdrawn(AccountDeletionWithdrawn {
                at: start() + Duration::days(1),
            }),
        ])
        .when(|s| decide_erase_account(s, late))
        .then_err(AccountError::NoDeletionPending);
    }

    #[test]
    fn an_account_never_verified_lapses_a_day_after_registration() {
        let account = AccountId::new();
        let lapse = start() + Duration::hours(UNVERIFIED_LAPSE_HOURS);
        let unverified = vec![registered(account, plain_pii())];
        assert_eq!(
            given::<Account>(unverified.clone()).state().lapses_at(),
            Some(lapse)
        );
        given::<Account>(unverified.clone())
            .when(|s| decide_erase_account(s, lapse - Duration::seconds(1)))
            .then_err(AccountError::ErasureNotDue);
        let state = given::<Account>(unverified.clone())
            .when(|s| decide_erase_account(s, lapse))
            .then(vec![AccountEvent::AccountErased(AccountErased {
                at: lapse,
            })]);
        assert!(state.is_erased());
        // A deletion requested before the lapse does not postpone it.
        let mut deleting = unverified;
        deleting.push(deletion_requested(start() + Duration::hours(1)));
        given::<Account>(deleting)
            .when(|s| decide_erase_account(s, lapse))
            .then(vec![AccountEvent::AccountErased(AccountErased {
                at: lapse,
            })]);
        // Verified once, the account never lapses, even after an e-mail change
        // leaves its new address unverified.
        let changed = vec![
            registered(account, plain_pii()),
            verified(),
            AccountEvent::AccountEmailChanged(nexus_core::domain::account::AccountEmailChanged {
                account,
                at: start() + Duration::hours(2),
                pii: Personal::Plain(nexus_core::domain::account::EmailPii {
                    email: "erin.new@example.com".into(),
                }),
            }),
        ];
        let given_changed = given::<Account>(changed.clone());
        let state = given_changed.state();
        assert!(!state.verified);
        assert_eq!(state.lapses_at(), None);
        given::<Account>(changed)
            .when(|s| decide_erase_account(s, lapse + Duration::days(30)))
            .then_err(AccountError::NoDeletionPending);
    }

    #[test]
    fn an_erasure_whose_key_is_gone_but_not_recorded_yet_is_recorded() {
        // The stream as it reads after the vault erase, before the append landed.
        let account = AccountId::new();
        given::<Account>(vec![
            registered(account, Personal::Erased),
            deletion_requested(start()),
        ])
        .when(|s| decide_erase_account(s, due()))
        .then(vec![AccountEvent::AccountErased(AccountErased {
            at: due(),
        })]);
    }

    #[test]
    fn nothing_can_be_done_to_an_erased_account() {
        let account = AccountId::new();
        let history = vec![
            registered(account, plain_pii()),
            deletion_requested(start()),
            AccountEvent::AccountErased(AccountErased { at: due() }),
        ];
        given::<Account>(history.clone())
            .when(|s| decide_withdraw_deletion(s, due()))
            .then_err(AccountError::AccountErased);
        given::<Account>(history)
            .when(|s| {
                decide_create_api_key(
                    s,
                    ApiKeyId::new(),
                    [1; 32],
                    "abcdefgh",
                    &ApiKeySettings::legacy(),
                    due(),
                )
            })
            .then_err(AccountError::AccountErased);
    }

    /// Given a registration never verified, when it is a day old, then the
    /// account is erased and its address is free; until then it cannot open an
    /// invoice, order or set a webhook, and after verifying it can.
    #[test]
    fn an_unverified_account_cannot_spend_and_lapses_after_a_day() {
        use nexus_core::domain::commerce::CommerceError;
        use nexus_core::domain::ledger::Owner;
        use nexus_core::domain::money::Micros;
        use nexus_core::service::commerce_service::CommandError;
        use nexus_testkit::request;
        let w = World::new();
        runtime().block_on(async {
            let a = &w.accounts;
            let lapsing = a.register("lapsing@example.com", PASSWORD).await.unwrap();
            let owner = Owner::Account(lapsing.account);
            let not_verified = |e: CommandError| {
                assert!(
                    matches!(
                        e,
                        CommandError::Refused(CommerceError::Account(
                            AccountError::EmailNotVerified
                        ))
                    ),
                    "{e:?}"
                )
            };
            let before = w.store.log.head();
            let deposit = w.commerce.request_deposit(owner, Micros(5_000_000)).await;
            not_verified(deposit.unwrap_err());
            let order = w
                .commerce
                .place_order(owner, &request(1_000_000), None)
                .await;
            not_verified(order.unwrap_err());
            let hook = a
                .set_webhook(lapsing.account, "https://hooks.example.com/n")
                .await;
            assert_eq!(refused(hook), AccountError::EmailNotVerified);
            assert_eq!(w.store.log.head(), before, "a refusal appends nothing");

            // A verified account can do all three.
            let kept = a.register("kept@example.com", PASSWORD).await.unwrap();
            let token = a.issue_verification(kept.account).await.unwrap();
            a.verify_email(token.expose()).await.unwrap();
            let kept_owner = Owner::Account(kept.account);
            w.commerce
                .request_deposit(kept_owner, Micros(5_000_000))
                .await
                .unwrap();
            a.set_webhook(kept.account, "https://hooks.example.com/k")
                .await
                .unwrap();

            w.clock
                .advance(Duration::hours(UNVERIFIED_LAPSE_HOURS) - Duration::seconds(1));
            assert_eq!(
                refused(a.erase_account(lapsing.account).await),
                AccountError::ErasureNotDue
            );
            w.clock.advance(Duration::seconds(1));
            a.erase_account(lapsing.account).await.unwrap();
            assert!(w.store.vault.is_erased(&lapsing.account.subject()).unwrap());
            assert_eq!(
                refused(a.erase_account(kept.account).await),
                AccountError::NoDeletionPending
            );
            // The address is free again.
            let owner_now = a.register("lapsing@example.com", PASSWORD).await.unwrap();
            assert_ne!(owner_now.account, lapsing.account);
        });
    }

    #[test]
    fn erase_account_erases_the_vault_subject_and_records_it_when_due() {
        let w = World::new();
        runtime().block_on(async {
            let a = &w.accounts;
            let reg = a.register("erin@example.com", PASSWORD).await.unwrap();
            let kept = a.register("frank@example.com", PASSWORD).await.unwrap();
            for account in [reg.account, kept.account] {
                let token = a.issue_verification(account).await.unwrap();
                a.verify_email(token.expose()).await.unwrap();
            }
            assert_eq!(
                refused(a.erase_account(reg.account).await),
                AccountError::NoDeletionPending
            );
            w.accounts
                .request_deletion(reg.account, true)
                .await
                .unwrap();
            w.clock
                .advance(Duration::days(DELETION_GRACE_DAYS) - Duration::seconds(1));
            assert_eq!(
                refused(a.erase_account(reg.account).await),
                AccountError::ErasureNotDue
            );
            assert!(!w.store.vault.is_erased(&reg.account.subject()).unwrap());

            w.clock.advance(Duration::seconds(1));
            a.erase_account(reg.account).await.unwrap();
            assert!(w.store.vault.is_erased(&reg.account.subject()).unwrap());
            let last = w
                .store
                .log
                .read_stream(&reg.account.stream(), u64::MAX, Direction::Backwards, 1)
                .await
                .unwrap();
            assert_eq!(last[0].event_type, "AccountErased");
            let view = a.account(reg.account).await.unwrap();
            assert_eq!(view.status, AccountViewStatus::Erased);
            assert_eq!(view.email, Personal::Erased);
            assert_eq!(
                refused(a.erase_account(reg.account).await),
                AccountError::AccountErased
            );
            assert_eq!(
                refused(a.authenticate("erin@example.com", PASSWORD).await),
                AccountError::InvalidCredentials
            );
            // Another account is untouched.
            assert!(!w.store.vault.is_erased(&kept.account.subject()).unwrap());
            a.authenticate("frank@example.com", PASSWORD).await.unwrap();

            // The erased account's address is free again (any case), for a new
            // account that owns none of the old one's data.
            let again = a
                .register("Erin@Example.com", "another long passphrase")
                .await;
            let again = again.unwrap();
            assert_ne!(again.account, reg.account);
            let login = a
                .authenticate("erin@example.com", "another long passphrase")
                .await
                .unwrap();
            assert_eq!(login.account, again.account);
            assert_eq!(
                refused(a.authenticate("erin@example.com", PASSWORD).await),
                AccountError::InvalidCredentials
            );
            // A taken address stays taken.
            assert_eq!(
                refused(a.register("frank@example.com", PASSWORD).await),
                AccountError::EmailTaken
            );
        });
    }
}
