//! The test kit's world for the tests that run the fulfilment worker: the
//! services read the system's clock, since the worker waits in real time.

pub use nexus_testkit::World;

pub fn world() -> World {
    World::builder().system_clock().build()
}
