//! The e-mail lookup hashes follow the vault's key epochs: after an erasure and
//! a rotation, nothing in a copy of the data directory, read with every key it
//! holds, tells whether the erased address was ever registered; live accounts
//! keep their addresses through the move.

use std::path::{Path, PathBuf};

use chrono::Duration;
use nexus_core::domain::account::{AccountError, Email, LookupKey, DELETION_GRACE_DAYS};
use nexus_core::log::EventStore;
use nexus_core::service::account_service::{AccountServiceError, EMAIL_LOOKUP};
use nexus_testkit::{runtime, World, PASSWORD};

const LIVE: &str = "alice.lookup@example.com";
const ERASED: &str = "bob.lookup@example.com";
const LATER: &str = "carol.lookup@example.com";

fn refused<T: std::fmt::Debug>(result: Result<T, AccountServiceError>) -> AccountError {
    match result {
        Err(AccountServiceError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn now_unix_s() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A copy of `from`, as someone copying the data directory would take it.
fn copy_of(from: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for file in files_under(from) {
        let to = copy.path().join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    copy
}

/// Every lookup key the holder of the directory (master key included) can
/// derive: one per epoch key file present, and the master key's own.
fn attacker_keys(w: &World) -> Vec<[u8; 32]> {
    let vault = &w.store.vault;
    let mut keys = vault.lookup_keys(EMAIL_LOOKUP).unwrap();
    keys.push(vault.derive_key(EMAIL_LOOKUP));
    keys
}

/// Places in the files under `dir` where `email`'s lookup hash under any of
/// `keys` appears, raw or as the hex of a stream name.
fn traces_of(dir: &Path, keys: &[[u8; 32]], email: &str) -> usize {
    let email = Email::parse(email).unwrap();
    let needles: Vec<Vec<u8>> = keys
        .iter()
        .map(|key| LookupKey::new(*key).email_hash(&email))
        .flat_map(|hash| [hash.to_vec(), hex::encode(hash).into_bytes()])
        .collect();
    let mut found = 0;
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in &needles {
            found += bytes
                .windows(needle.len())
                .filter(|w| w == &needle.as_slice())
                .count();
        }
    }
    found
}

fn epoch_files(dir: &Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "key"))
        .filter(|f| f.parent().is_some_and(|p| p.ends_with("vault-epochs")))
        .count()
}

#[test]
fn after_erasure_and_rotation_no_key_on_the_machine_finds_the_erased_address() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        // Given a live account and an erased one,
        let alice = w.registered(LIVE).await;
        let bob = w.registered(ERASED).await;
        a.request_deletion(bob, true).await.unwrap();
        w.clock.advance(Duration::days(DELETION_GRACE_DAYS));
        a.erase_account(bob).await.unwrap();
        // the erased address is still found before a rotation (the check sees it),
        let before = copy_of(w.dir());
        assert!(traces_of(before.path(), &attacker_keys(&w), ERASED) > 0);

        // when the key epoch rotates,
        let rotation = a.rotate_keys(now_unix_s()).await.unwrap();
        assert_eq!(rotation.moved_addresses, 1, "{rotation:?}");
        assert_eq!(rotation.accounts, 2);
        assert_eq!(rotation.conflicts, 0);

        // then a copy of the directory, with every key it holds, no longer
        // finds the erased address anywhere,
        let after = copy_of(w.dir());
        assert_eq!(epoch_files(after.path()), 1, "only the current epoch's key");
        let keys = attacker_keys(&w);
        assert_eq!(traces_of(after.path(), &keys, ERASED), 0);
        assert!(
            traces_of(after.path(), &keys, LIVE) > 0,
            "the check can see"
        );
        // and the live account kept its address.
        assert_eq!(a.authenticate(LIVE, PASSWORD).await.unwrap().account, alice);
        assert_eq!(
            refused(a.register(LIVE, PASSWORD).await),
            AccountError::EmailTaken
        );
        // The erased address is free for anyone.
        a.register(ERASED, PASSWORD).await.unwrap();
    });
}

#[test]
fn during_a_rotation_every_key_is_tried_and_an_interrupted_one_is_completed() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let alice = w.registered(LIVE).await;
        // Given a rotation interrupted after its new epoch began,
        let begun = w.store.vault.begin_rotation(now_unix_s()).unwrap();
        let epoch = begun.epoch;
        drop(begun);
        assert_eq!(w.store.vault.lookup_keys(EMAIL_LOOKUP).unwrap().len(), 2);
        // an address reserved under the older key still logs in and is taken,
        assert_eq!(a.authenticate(LIVE, PASSWORD).await.unwrap().account, alice);
        assert_eq!(
            refused(a.register(LIVE, PASSWORD).await),
            AccountError::EmailTaken
        );
        // and a new registration reserves under the newest key.
        let carol = w.registered(LATER).await;
        let newest = a.email_stream(LATER).unwrap();
        assert_eq!(w.store.log.stream_version(&newest).await.unwrap(), 1);

        // When the next rotation runs, it completes the same epoch,
        let rotation = a.rotate_keys(now_unix_s()).await.unwrap();
        assert_eq!(rotation.rotation.epoch, epoch);
        assert_eq!(rotation.moved_addresses, 1, "alice only: carol is there");
        assert_eq!(w.store.vault.lookup_keys(EMAIL_LOOKUP).unwrap().len(), 1);
        // and both still log in and keep their addresses.
        assert_eq!(a.authenticate(LIVE, PASSWORD).await.unwrap().account, alice);
        assert_eq!(
            a.authenticate(LATER, PASSWORD).await.unwrap().account,
            carol
        );
        assert_eq!(
            refused(a.register(LIVE, PASSWORD).await),
            AccountError::EmailTaken
        );
        assert_eq!(
            refused(a.register(LATER, PASSWORD).await),
            AccountError::EmailTaken
        );
    });
}

#[test]
fn an_address_changed_during_a_rotation_is_not_carried_over() {
    let w = World::new();
    runtime().block_on(async {
        let a = &w.accounts;
        let alice = w.registered(LIVE).await;
        let _ = w.store.vault.begin_rotation(now_unix_s()).unwrap();
        // Given alice moved to a new address while the older key was still in use,
        a.change_email(alice, LATER).await.unwrap();
        // when the rotation completes,
        let rotation = a.rotate_keys(now_unix_s()).await.unwrap();
        assert_eq!(rotation.moved_addresses, 0);
        // then her old address is free and the new one hers.
        a.register(LIVE, PASSWORD).await.unwrap();
        assert_eq!(
            refused(a.register(LATER, PASSWORD).await),
            AccountError::EmailTaken
        );
        assert_eq!(
            a.authenticate(LATER, PASSWORD).await.unwrap().account,
            alice
        );
    });
}
