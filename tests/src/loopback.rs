//! Small HTTP servers on loopback for tests: fake upstreams and gateways,
//! webhook receivers. Each runs on its own thread with its own actix system, so
//! a test needs no runtime of its own to host one, and stops when dropped.

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

/// A server on `127.0.0.1` at a free port.
pub struct LoopbackServer {
    addr: SocketAddr,
    handle: ServerHandle,
}

impl LoopbackServer {
    /// Serves what `configure` adds (routes, app data, a default service) with
    /// `workers` worker threads. Panics when it cannot bind: a test cannot go on.
    pub fn start<F>(workers: usize, configure: F) -> LoopbackServer
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        assert!(workers > 0, "a server needs a worker");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || App::new().configure(configure.clone()))
                    .workers(workers)
                    .disable_signals()
                    .shutdown_timeout(0)
                    .bind(("127.0.0.1", 0))
                    .expect("bind a loopback port");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle()))
                    .expect("the test waits for the address");
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv().expect("the loopback server starts");
        LoopbackServer { addr, handle }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        debug_assert!(path.is_empty() || path.starts_with('/'), "{path}");
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        // The stop command is sent at once; its completion is not awaited (the
        // server's thread ends by itself).
        drop(self.handle.stop(false));
    }
}
