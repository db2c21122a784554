//! The one tracing subscriber of this test binary (a process has one global
//! default): it keeps every log line of the binary, for the tests that check no
//! line holds a secret, and copies the fields of each event to the thread that
//! asked for them, for the tests that read what they themselves logged.
//!
//! Global, not a thread-local default: a thread-local subscriber misses events
//! whose callsites other tests, running at the same time on other threads,
//! register first.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Once, OnceLock};

static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Arc<Mutex<String>>>> =
        const { std::cell::RefCell::new(None) };
}

fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| tracing::subscriber::set_global_default(Capture).unwrap());
}

/// From now on, every log line of the binary is kept (see [`all_lines`]).
pub fn capture_all() {
    install();
}

/// Every log line kept so far, from every test of the binary.
pub fn all_lines() -> Vec<String> {
    lines().lock().unwrap().clone()
}

/// Captures the fields of the log events of the calling thread (a
/// current-thread test) from now on, one event a line.
pub fn capture_thread() -> Arc<Mutex<String>> {
    install();
    let log = Arc::new(Mutex::new(String::new()));
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(log.clone()));
    log
}

fn lines() -> &'static Mutex<Vec<String>> {
    LINES.get_or_init(|| Mutex::new(Vec::new()))
}

fn push_line(line: String) {
    lines().lock().unwrap().push(line);
}

/// `name=value` of every field: each after a space in [`all_lines`], each
/// before one in [`capture_thread`] (the formats their tests were written for).
struct Fields<'a> {
    out: &'a mut String,
    leading_space: bool,
}

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = if self.leading_space {
            write!(self.out, " {}={:?}", field.name(), value)
        } else {
            write!(self.out, "{}={:?} ", field.name(), value)
        };
    }
}

struct Capture;

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = format!("span {}", span.metadata().name());
        span.record(&mut Fields {
            out: &mut line,
            leading_space: true,
        });
        push_line(line);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut line = String::from("record");
        values.record(&mut Fields {
            out: &mut line,
            leading_space: true,
        });
        push_line(line);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        let mut line = format!("{} {}", metadata.level(), metadata.target());
        event.record(&mut Fields {
            out: &mut line,
            leading_space: true,
        });
        push_line(line);
        CAPTURED.with(|captured| {
            if let Some(log) = &*captured.borrow() {
                let mut log = log.lock().unwrap();
                event.record(&mut Fields {
                    out: &mut log,
                    leading_space: false,
                });
                log.push('\n');
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
