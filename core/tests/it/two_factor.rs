//! Two-factor authentication through the command service on a real store:
//! enrolment, the second factor of a login, replay and concurrency, recovery
//! codes, turning it off. Codes are computed from the enrolment's secret at
//! the world's manual clock.

use chrono::Duration;
use nexus_core::domain::account::{
    totp_code, totp_step, AccountError, SecondFactor, TwoFactor, RECOVERY_CODES,
};
use nexus_core::domain::clock::Clock;
use nexus_core::domain::codec::Personal;
use nexus_core::service::account_service::AccountServiceError;
use nexus_testkit::{runtime, World, PASSWORD};

const EMAIL: &str = "tfa@example.com";

#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, AccountServiceError>) -> AccountError {
    match result {
        Err(AccountServiceError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// RFC 4648 base32 without padding, upper case: what the enrolment shows.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c).expect("base32") as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

fn code_now(w: &World, key: &[u8]) -> SecondFactor {
    SecondFactor::Totp(totp_code(key, totp_step(w.clock.now()).unwrap()))
}

#[test]
fn enrol_then_every_login_needs_a_fresh_code() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let account = a.register(EMAIL, PASSWORD).await.unwrap().account;
        let enrolment = a.start_two_factor(account).await.unwrap();
        let key = base32_decode(enrolment.secret.expose());
        assert_eq!(key.len(), 20);
        assert!(enrolment
            .uri
            .expose()
            .starts_with(&format!("otpauth://totp/Nexus:{account}?secret=")));
        assert!(!enrolment.uri.expose().contains("example.com"));
        // Pending: logins do not need a code yet.
        a.authenticate(EMAIL, PASSWORD).await.unwrap();
        assert_eq!(
            refused(a.confirm_two_factor(account, "000000").await),
            AccountError::TwoFactorCodeInvalid
        );
        let SecondFactor::Totp(first) = code_now(&w, &key) else {
            unreachable!()
        };
        let recovery = a.confirm_two_factor(account, &first).await.unwrap();
        assert_eq!(recovery.len(), RECOVERY_CODES);

        assert_eq!(
            refused(a.authenticate(EMAIL, PASSWORD).await),
            AccountError::TwoFactorRequired
        );
        // A wrong password is told as such, whatever the code.
        assert_eq!(
            refused(a.sign_in(EMAIL, "wrong password!", None).await),
            AccountError::InvalidCredentials
        );
        // The confirming code's step is spent.
        let replay = SecondFactor::Totp(first);
        assert_eq!(
            refused(a.sign_in(EMAIL, PASSWORD, Some(&replay)).await),
            AccountError::TwoFactorCodeInvalid
        );
        w.clock.advance(Duration::seconds(30));
        let code = code_now(&w, &key);
        let login = a.sign_in(EMAIL, PASSWORD, Some(&code)).await.unwrap();
        assert_eq!(login.account, account);
        assert_eq!(
            refused(a.sign_in(EMAIL, PASSWORD, Some(&code)).await),
            AccountError::TwoFactorCodeInvalid
        );

        // A recovery code works once.
        let spare = SecondFactor::RecoveryCode(recovery[3].expose().to_owned());
        a.sign_in(EMAIL, PASSWORD, Some(&spare)).await.unwrap();
        assert_eq!(
            refused(a.sign_in(EMAIL, PASSWORD, Some(&spare)).await),
            AccountError::TwoFactorCodeInvalid
        );
    });
}

#[test]
fn one_code_signs_in_once_even_concurrently() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let account = a.register(EMAIL, PASSWORD).await.unwrap().account;
        let key = base32_decode(a.start_two_factor(account).await.unwrap().secret.expose());
        let SecondFactor::Totp(first) = code_now(&w, &key) else {
            unreachable!()
        };
        a.confirm_two_factor(account, &first).await.unwrap();
        w.clock.advance(Duration::seconds(60));
        let code = code_now(&w, &key);
        let attempts: Vec<_> = (0..4)
            .map(|_| {
                let (accounts, code) = (w.accounts.clone(), code.clone());
                tokio::spawn(async move { accounts.sign_in(EMAIL, PASSWORD, Some(&code)).await })
            })
            .collect();
        let mut results = Vec::new();
        for attempt in attempts {
            results.push(attempt.await.unwrap());
        }
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        for result in results.into_iter().filter(|r| r.is_err()) {
            assert_eq!(refused(result), AccountError::TwoFactorCodeInvalid);
        }
    });
}

#[test]
fn disabling_needs_the_password_and_a_code() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let account = a.register(EMAIL, PASSWORD).await.unwrap().account;
        let no_code = SecondFactor::Totp("000000".into());
        assert_eq!(
            refused(a.disable_two_factor(account, PASSWORD, &no_code).await),
            AccountError::TwoFactorNotEnabled
        );
        let key = base32_decode(a.start_two_factor(account).await.unwrap().secret.expose());
        let SecondFactor::Totp(first) = code_now(&w, &key) else {
            unreachable!()
        };
        a.confirm_two_factor(account, &first).await.unwrap();
        assert_eq!(
            refused(a.start_two_factor(account).await),
            AccountError::TwoFactorAlreadyEnabled
        );
        w.clock.advance(Duration::seconds(30));
        let code = code_now(&w, &key);
        assert_eq!(
            refused(
                a.disable_two_factor(account, "wrong password!", &code)
                    .await
            ),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(a.disable_two_factor(account, PASSWORD, &no_code).await),
            AccountError::TwoFactorCodeInvalid
        );
        a.disable_two_factor(account, PASSWORD, &code)
            .await
            .unwrap();
        let login = a.authenticate(EMAIL, PASSWORD).await.unwrap();
        assert_eq!(login.account, account);
    });
}

#[test]
fn the_secret_is_sealed_under_the_account_and_erased_with_it() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let account = a.register(EMAIL, PASSWORD).await.unwrap().account;
        let key = base32_decode(a.start_two_factor(account).await.unwrap().secret.expose());
        let state = a.load_account(account).await.unwrap().state;
        let TwoFactor::Pending { secret, .. } = &state.two_factor else {
            panic!("{:?}", state.two_factor)
        };
        assert_eq!(secret.plain().map(|s| s.secret.clone()), Some(key));
        a.request_deletion(account, true).await.unwrap();
        w.store.vault.erase(&account.subject()).unwrap();
        let state = a.load_account(account).await.unwrap().state;
        let TwoFactor::Pending { secret, .. } = &state.two_factor else {
            panic!("{:?}", state.two_factor)
        };
        assert_eq!(*secret, Personal::Erased);
    });
}

#[test]
fn withdrawing_a_deletion_with_the_password_needs_a_code_too() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let account = a.register(EMAIL, PASSWORD).await.unwrap().account;
        let key = base32_decode(a.start_two_factor(account).await.unwrap().secret.expose());
        let SecondFactor::Totp(first) = code_now(&w, &key) else {
            unreachable!()
        };
        a.confirm_two_factor(account, &first).await.unwrap();
        a.request_deletion(account, true).await.unwrap();
        assert_eq!(
            refused(a.authenticate_holder(EMAIL, PASSWORD).await),
            AccountError::TwoFactorRequired
        );
        w.clock.advance(Duration::seconds(30));
        let code = code_now(&w, &key);
        let holder = a.authenticate_holder_with(EMAIL, PASSWORD, Some(&code));
        assert_eq!(holder.await.unwrap(), account);
        assert_eq!(
            refused(
                a.authenticate_holder_with(EMAIL, PASSWORD, Some(&code))
                    .await
            ),
            AccountError::TwoFactorCodeInvalid
        );
    });
}

/// Given an account taken over (its address changed, then a key created, a
/// webhook set and two-factor turned on by whoever changed it), when the old
/// address undoes the change, then that key is revoked, the webhook removed
/// and two-factor off: the owner signs in with the new password alone, and
/// the key the owner made before the change still works.
#[test]
fn an_undo_takes_back_what_was_set_up_since_the_change() {
    use nexus_core::domain::account::ApiKeySettings;
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        let account = w.verified(EMAIL).await;
        let owners_key = a
            .create_api_key(account, &ApiKeySettings::legacy())
            .await
            .unwrap();
        w.clock.advance(Duration::minutes(1));
        let change = a
            .change_email(account, "mallory@evil.example")
            .await
            .unwrap();
        let planted = a
            .create_api_key(account, &ApiKeySettings::legacy())
            .await
            .unwrap();
        a.set_webhook(account, "https://hooks.evil.example/codes")
            .await
            .unwrap();
        let key = base32_decode(a.start_two_factor(account).await.unwrap().secret.expose());
        let SecondFactor::Totp(first) = code_now(&w, &key) else {
            unreachable!()
        };
        a.confirm_two_factor(account, &first).await.unwrap();

        w.clock.advance(Duration::hours(1));
        a.undo_email_change(change.undo.token.expose(), "the owner's new passphrase")
            .await
            .unwrap();
        assert_eq!(
            refused(a.authenticate_api_key(planted.key.expose(), loopback).await),
            AccountError::InvalidCredentials
        );
        let kept = a.authenticate_api_key(owners_key.key.expose(), loopback);
        assert_eq!(kept.await.unwrap().account, account);
        assert_eq!(a.webhook(account).await.unwrap(), None);
        let login = a
            .sign_in(EMAIL, "the owner's new passphrase", None)
            .await
            .unwrap();
        assert_eq!(login.account, account);
    });
}
