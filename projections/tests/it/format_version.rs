//! Read-model row format versions: a tree written with another format version
//! than the code's (or with none recorded, by an older build) is dropped and
//! rebuilt from position 0 when the runner starts, instead of being read.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use nexus_core::log::{EventStore, RecordedEvent};
use nexus_projections::keys::FORMAT_KEY;
use nexus_projections::{
    ApplyError, Projection, RunState, Runner, RunnerConfig, Staging, PROJECTION_NAMES,
};

/// Counts events and remembers the last position. Version 1 stores the count
/// alone (u64); version 2 stores (count, last position): a version 2 build
/// cannot read a version 1 row.
struct Counter {
    version: u32,
}

impl Projection for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn format_version(&self) -> u32 {
        self.version
    }

    fn apply(&mut self, event: &RecordedEvent, st: &mut Staging) -> Result<(), ApplyError> {
        if self.version == 1 {
            *st.get_or_insert_with::<u64>(b"count", || 0)? += 1;
        } else {
            let row = st.get_or_insert_with::<(u64, u64)>(b"count", || (0, 0))?;
            row.0 += 1;
            row.1 = event.position;
        }
        Ok(())
    }
}

/// Runs `projections` until they reach the log's head, then stops them.
async fn catch_up(world: &World, projections: Vec<Box<dyn Projection>>) {
    let runner = Runner::start_with(
        world.log(),
        &world.models,
        projections,
        RunnerConfig::default(),
    )
    .unwrap();
    let head = world.store.log.head();
    runner
        .wait_for(None, head, Duration::from_secs(20))
        .await
        .unwrap();
    for status in runner.status().await {
        assert_eq!(status.state, RunState::Running, "{}", status.name);
    }
    runner.stop().await;
}

#[test]
fn a_tree_written_with_another_format_version_is_rebuilt_with_correct_rows() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        customer_workload(&world, 1, 5).await;
        catch_up(&world, vec![Box::new(Counter { version: 1 })]).await;
        let tree = world.models.tree("counter").unwrap();
        assert_eq!(world.models.format_version("counter").unwrap(), Some(1));
        let head = world.store.log.head();
        let stored = tree.get(b"count").unwrap().unwrap();
        assert_eq!(
            nexus_projections::value::decode::<u64>(b"count", &stored).unwrap(),
            head
        );

        // More events, then a build whose rows are of version 2.
        customer_workload(&world, 2, 3).await;
        let head = world.store.log.head();
        catch_up(&world, vec![Box::new(Counter { version: 2 })]).await;
        assert_eq!(world.models.format_version("counter").unwrap(), Some(2));
        // The tree was dropped and made anew.
        let tree = world.models.tree("counter").unwrap();
        let stored = tree.get(b"count").unwrap().unwrap();
        assert_eq!(
            nexus_projections::value::decode::<(u64, u64)>(b"count", &stored).unwrap(),
            (head, head),
            "every event counted once, from position 1, in the new format"
        );
    });
}

#[test]
fn standard_trees_of_another_or_no_format_version_are_rebuilt_and_current_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()));
    runtime().block_on(async {
        customer_workload(&world, 1, 8).await;
        anonymous_workload(&world, 2).await;
        catch_up(&world, world.models.projections()).await;
        let expected: Vec<_> = PROJECTION_NAMES
            .iter()
            .map(|name| world.models.dump(name).unwrap())
            .collect();
        for projection in world.models.projections() {
            assert_eq!(
                world.models.format_version(projection.name()).unwrap(),
                Some(projection.format_version()),
                "{} records its format",
                projection.name()
            );
        }

        // orders: rows of an older format (one key per order, version 1).
        let orders = world.models.tree("orders").unwrap();
        orders.insert(FORMAT_KEY, &1u32.to_be_bytes()).unwrap();
        orders
            .insert([b'o'; 17], &b"a row of format 1"[..])
            .unwrap();
        // accounts: rows and no version at all (written before versions).
        let accounts = world.models.tree("accounts").unwrap();
        accounts.remove(FORMAT_KEY).unwrap();
        accounts.insert(b"zstale", &b"unreadable"[..]).unwrap();
        // wallets: the current version, and a row a rebuild would drop.
        let wallets = world.models.tree("wallets").unwrap();
        wallets.insert(b"zkept", &b"kept"[..]).unwrap();

        catch_up(&world, world.models.projections()).await;
        assert_eq!(world.models.format_version("orders").unwrap(), Some(2));
        assert_eq!(world.models.format_version("accounts").unwrap(), Some(1));
        assert!(
            wallets.get(b"zkept").unwrap().is_some(),
            "a tree of the current format is not rebuilt"
        );
        wallets.remove(b"zkept").unwrap();
        for (name, expected) in PROJECTION_NAMES.iter().zip(&expected) {
            assert!(
                world.models.dump(name).unwrap() == *expected,
                "{name}: rebuilt (or kept) equal to the first build"
            );
        }
        // The rebuilt orders read as before.
        let orders = world.models.orders().unwrap();
        assert_eq!(orders.order_count().unwrap(), 9);
    });
}
