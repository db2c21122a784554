//! Account recovery through the command service: the password reset, the undo
//! of an e-mail change by the old address, and registration of a taken
//! address doing the same work as of a free one.

use chrono::Duration;
use nexus_core::domain::account::{AccountError, MAX_PENDING_EMAIL_UNDOS};
use nexus_core::domain::clock::Clock;
use nexus_core::domain::codec::Personal;
use nexus_core::log::EventStore;
use nexus_core::service::account_service::AccountServiceError;

use nexus_testkit::{runtime, World, PASSWORD};

const NEW_PASSWORD: &str = "a brand new passphrase";

#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, AccountServiceError>) -> AccountError {
    match result {
        Err(AccountServiceError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_reset_token_sets_the_password_once() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let account = w.registered("ivy@example.com").await;
        let reset = a
            .request_password_reset(" IVY@Example.com ")
            .await
            .unwrap()
            .expect("the account gets a reset");
        assert_eq!(reset.account, account);
        assert_eq!(reset.email, "ivy@example.com", "the address as registered");
        assert_eq!(reset.expires_at, w.clock.now() + Duration::minutes(30));

        assert_eq!(
            refused(a.reset_password(reset.token.expose(), "short").await),
            AccountError::PasswordTooShort
        );
        assert_eq!(
            a.reset_password(reset.token.expose(), NEW_PASSWORD)
                .await
                .unwrap(),
            account
        );
        assert_eq!(
            a.authenticate("ivy@example.com", NEW_PASSWORD)
                .await
                .unwrap()
                .account,
            account
        );
        assert_eq!(
            refused(a.authenticate("ivy@example.com", PASSWORD).await),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(
                a.reset_password(reset.token.expose(), "yet another one")
                    .await
            ),
            AccountError::RecoveryTokenUsed
        );
        a.authenticate("ivy@example.com", NEW_PASSWORD)
            .await
            .unwrap();
    });
}

#[test]
fn a_reset_token_expires_after_30_minutes_and_a_newer_one_supersedes_it() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        w.registered("jack@example.com").await;
        let first = a.request_password_reset("jack@example.com").await.unwrap();
        let second = a.request_password_reset("jack@example.com").await.unwrap();
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(
            refused(a.reset_password(first.token.expose(), NEW_PASSWORD).await),
            AccountError::RecoveryTokenInvalid,
            "only the latest token works"
        );
        w.clock.advance(Duration::minutes(30));
        assert_eq!(
            refused(a.reset_password(second.token.expose(), NEW_PASSWORD).await),
            AccountError::RecoveryTokenExpired
        );
        a.authenticate("jack@example.com", PASSWORD).await.unwrap();
        for token in ["", "not a token", &second.token.expose()[..40]] {
            assert_eq!(
                refused(a.reset_password(token, NEW_PASSWORD).await),
                AccountError::RecoveryTokenInvalid
            );
        }
        // A well-shaped token of an account that does not exist.
        let other = World::new();
        other.registered("kim@example.com").await;
        let token = other
            .accounts
            .request_password_reset("kim@example.com")
            .await
            .unwrap()
            .unwrap()
            .token;
        assert_eq!(
            refused(a.reset_password(token.expose(), NEW_PASSWORD).await),
            AccountError::RecoveryTokenInvalid
        );
    });
}

#[test]
fn a_reset_for_an_address_without_an_enabled_account_records_nothing() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let leaving = w.registered("leo@example.com").await;
        a.request_deletion(leaving, true).await.unwrap();
        let head = w.store.log.head();
        for email in ["nobody@example.com", "not an address", "leo@example.com"] {
            assert!(a.request_password_reset(email).await.unwrap().is_none());
        }
        assert_eq!(w.store.log.head(), head, "nothing appended");
    });
}

#[test]
fn the_old_address_undoes_an_email_change_within_7_days() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let account = w.registered("mia@old.example").await;
        let change = a
            .change_email(account, "mallory@evil.example")
            .await
            .unwrap();
        assert_eq!(change.undo.email, "mia@old.example");
        assert_eq!(change.undo.expires_at, w.clock.now() + Duration::days(7));
        // Whoever changed the address changed the password too.
        a.change_password(account, PASSWORD, "mallory's password")
            .await
            .unwrap();

        w.clock.advance(Duration::days(6));
        assert_eq!(
            refused(
                a.undo_email_change(change.undo.token.expose(), "short")
                    .await
            ),
            AccountError::PasswordTooShort
        );
        assert_eq!(
            a.undo_email_change(change.undo.token.expose(), NEW_PASSWORD)
                .await
                .unwrap(),
            account
        );
        let view = a.account(account).await.unwrap();
        assert_eq!(view.email, Personal::Plain("mia@old.example".into()));
        assert!(view.verified, "the undo link reached the address");
        assert_eq!(
            a.authenticate("mia@old.example", NEW_PASSWORD)
                .await
                .unwrap()
                .account,
            account
        );
        assert_eq!(
            refused(
                a.authenticate("mallory@evil.example", "mallory's password")
                    .await
            ),
            AccountError::InvalidCredentials
        );
        assert_eq!(
            refused(
                a.undo_email_change(change.undo.token.expose(), NEW_PASSWORD)
                    .await
            ),
            AccountError::RecoveryTokenUsed
        );
        // The address taken over is free again.
        w.registered("mallory@evil.example").await;
    });
}

#[test]
fn an_undo_is_refused_after_7_days_and_when_the_old_address_was_taken() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let nora = w.registered("nora@example.com").await;
        let late = a.change_email(nora, "nora@new.example").await.unwrap();
        w.clock.advance(Duration::days(7));
        assert_eq!(
            refused(
                a.undo_email_change(late.undo.token.expose(), NEW_PASSWORD)
                    .await
            ),
            AccountError::RecoveryTokenExpired
        );

        let oscar = w.registered("oscar@example.com").await;
        let change = a.change_email(oscar, "oscar@new.example").await.unwrap();
        let other = w.registered("oscar@example.com").await;
        assert_ne!(other, oscar);
        assert_eq!(
            refused(
                a.undo_email_change(change.undo.token.expose(), NEW_PASSWORD)
                    .await
            ),
            AccountError::EmailUndoAddressTaken
        );
        a.authenticate("oscar@new.example", PASSWORD).await.unwrap();
    });
}

#[test]
fn changes_in_a_row_cannot_push_the_first_undo_out() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let account = w.registered("pat@example.com").await;
        let mut undos = Vec::new();
        for n in 0..MAX_PENDING_EMAIL_UNDOS {
            let change = a
                .change_email(account, &format!("pat{n}@evil.example"))
                .await
                .unwrap();
            undos.push(change.undo);
        }
        assert_eq!(
            refused(a.change_email(account, "pat-more@evil.example").await),
            AccountError::TooManyEmailChanges
        );
        a.undo_email_change(undos[0].token.expose(), NEW_PASSWORD)
            .await
            .unwrap();
        let view = a.account(account).await.unwrap();
        assert_eq!(view.email, Personal::Plain("pat@example.com".into()));
        // Every other undo ended with it.
        assert_eq!(
            refused(
                a.undo_email_change(undos[1].token.expose(), NEW_PASSWORD)
                    .await
            ),
            AccountError::RecoveryTokenInvalid
        );
        // The undos expire: changes are possible again 7 days later.
        w.clock.advance(Duration::days(7));
        a.change_email(account, "pat@new.example").await.unwrap();
    });
}

#[test]
fn registering_a_taken_address_hashes_the_password_like_a_free_one() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let before = a.bcrypt_runs();
        let owner = a.register("quinn@example.com", PASSWORD).await.unwrap();
        let free = a.bcrypt_runs() - before;
        let before = a.bcrypt_runs();
        assert_eq!(
            refused(a.register("Quinn@Example.com", "an attacker's guess").await),
            AccountError::EmailTaken
        );
        assert_eq!(a.bcrypt_runs() - before, free, "the same bcrypt work");
        let holder = a.holder_of("QUINN@example.com").await.unwrap().unwrap();
        assert_eq!(holder.account, owner.account);
        assert_eq!(holder.email, "quinn@example.com");
        assert!(a.holder_of("nobody@example.com").await.unwrap().is_none());
        assert!(a.holder_of("not an address").await.unwrap().is_none());
        // The attempt changed nothing: the owner's password still signs in.
        a.authenticate("quinn@example.com", PASSWORD).await.unwrap();
        assert_eq!(
            refused(
                a.authenticate("quinn@example.com", "an attacker's guess")
                    .await
            ),
            AccountError::InvalidCredentials
        );
    });
}
