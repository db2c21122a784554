//! The folded-aggregate cache on a real store: a hit is what a fresh fold gives;
//! a new event or an erasure is never hidden by it.

use nexus_core::domain::account::Account;
use nexus_core::domain::codec::Personal;
use nexus_core::service::repo::{load, load_cached, AggregateCache};
use nexus_testkit::{World, PASSWORD};

#[test]
fn a_hit_equals_a_fresh_fold_and_new_events_or_erasures_invalidate_it() {
    let w = World::new();
    let (store, accounts) = (&w.store, &w.accounts);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let registered = accounts
            .register("cache@example.com", PASSWORD)
            .await
            .unwrap();
        let stream = registered.account.stream();
        let cache = AggregateCache::with_capacity(8);
        let first = load_cached::<_, Account>(&*store.log, &store.vault, &stream, &cache)
            .await
            .unwrap();
        assert_eq!(
            first.state.email,
            Personal::Plain("cache@example.com".into())
        );
        assert_eq!(cache.len(), 1);
        let hit = load_cached::<_, Account>(&*store.log, &store.vault, &stream, &cache)
            .await
            .unwrap();
        assert_eq!(hit, first);

        // A new event on the stream: the next load folds it in.
        accounts
            .set_objection(registered.account, true)
            .await
            .unwrap();
        let after = load_cached::<_, Account>(&*store.log, &store.vault, &stream, &cache)
            .await
            .unwrap();
        assert_eq!(after.version, first.version + 1);
        assert!(after.state.objection);
        let fresh = load::<_, Account>(&*store.log, &store.vault, &stream)
            .await
            .unwrap();
        assert_eq!(after, fresh);

        // An erasure with no new event on the stream: the cached plaintext is not
        // served again.
        store.vault.erase(&registered.account.subject()).unwrap();
        let erased = load_cached::<_, Account>(&*store.log, &store.vault, &stream, &cache)
            .await
            .unwrap();
        assert_eq!(erased.version, after.version);
        assert_eq!(erased.state.email, Personal::Erased);

        // Capacity is a bound, not a hint.
        for i in 0..20 {
            let other = accounts
                .register(&format!("cache-{i}@example.com"), PASSWORD)
                .await
                .unwrap();
            load_cached::<_, Account>(&*store.log, &store.vault, &other.account.stream(), &cache)
                .await
                .unwrap();
            assert!(cache.len() <= 8);
        }
    });
}
