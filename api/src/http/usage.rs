//! The usage log: one line per HTTP request — time, method, route pattern, status,
//! latency, and who called (account and API key ids) — as JSON lines in
//! `<data>/usage/YYYY-MM-DD.jsonl`, one file per UTC day, deleted after
//! [`RETENTION_DAYS`].
//!
//! What it never holds: bodies, query strings, paths with their ids filled in (the
//! route *pattern* is logged: `/v1/track/{tracking_id}`), codes, passwords, keys,
//! e-mail addresses or IP addresses (the privacy policy lists usage data as
//! requests, response codes and timestamps).
//!
//! Writing never blocks a request: records go through a bounded queue to one
//! writer thread that drains it every 100 ms; when the queue is full the record
//! is dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use nexus_core::domain::ids::{AccountId, ApiKeyId};
use serde::Serialize;

/// Days a usage file is kept (the policy's 90 days).
pub const RETENTION_DAYS: i64 = 90;
/// Records waiting for the writer; beyond, records are dropped and counted.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Longest route pattern logged, in bytes.
const MAX_ROUTE_BYTES: usize = 128;
/// The writer drains the queue and flushes this often (65,536 queued records
/// per 100 ms: far above what the server answers).
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Who made an authenticated call, left in the request's extensions by the
/// authentication extractors for the usage log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub account: AccountId,
    /// The API key used, if any (a session otherwise).
    pub key_id: Option<ApiKeyId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    /// When the request arrived.
    pub at: DateTime<Utc>,
    pub method: String,
    /// The matched route pattern, or `unmatched`.
    pub route: String,
    pub status: u16,
    pub latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl UsageRecord {
    pub fn new(
        at: DateTime<Utc>,
        method: &str,
        route: Option<String>,
        status: u16,
        latency: Duration,
        caller: Option<Caller>,
    ) -> Self {
        let mut route = route.unwrap_or_else(|| "unmatched".into());
        if route.len() > MAX_ROUTE_BYTES {
            let mut end = MAX_ROUTE_BYTES;
            while !route.is_char_boundary(end) {
                end -= 1;
            }
            route.truncate(end);
        }
        Self {
            at,
            method: method.to_owned(),
            route,
            status,
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            account: caller.map(|c| c.account.to_string()),
            key_id: caller.and_then(|c| c.key_id).map(|k| k.to_string()),
        }
    }
}

enum Message {
    Record(UsageRecord),
    Stop,
}

pub struct UsageLog {
    queue: SyncSender<Message>,
    dropped: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl UsageLog {
    /// Starts the writer over `dir` (created if missing) and deletes files past
    /// retention.
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        sweep(dir, Utc::now().date_naive())?;
        let (queue, received) = sync_channel(QUEUE_CAPACITY);
        let dir = dir.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("usage-log".into())
            .spawn(move || write_loop(&dir, &received))?;
        Ok(Self {
            queue,
            dropped: AtomicU64::new(0),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues a record; never blocks.
    pub fn record(&self, record: UsageRecord) {
        match self.queue.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the queue was full (or the writer stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued and stops the writer.
    pub fn close(&self) {
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            // Blocking send: the stop waits behind the queued records.
            let _ = self.queue.send(Message::Stop);
            let _ = handle.join();
        }
    }
}

impl Drop for UsageLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn file_for(dir: &Path, day: NaiveDate) -> PathBuf {
    dir.join(format!("{}.jsonl", day.format("%Y-%m-%d")))
}

/// Deletes the day files older than the retention period, as of `today`.
pub fn sweep(dir: &Path, today: NaiveDate) -> std::io::Result<usize> {
    let Some(oldest_kept) = today.checked_sub_signed(chrono::Duration::days(RETENTION_DAYS)) else {
        return Ok(0);
    };
    let mut deleted = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(day) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            continue;
        };
        if day < oldest_kept {
            std::fs::remove_file(entry.path())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

struct DayFile {
    day: NaiveDate,
    out: BufWriter<File>,
}

fn write_loop(dir: &Path, received: &Receiver<Message>) {
    let mut current: Option<DayFile> = None;
    loop {
        // Drain what is queued, then sleep: senders never wake this thread (a
        // wake-up per request costs more than the write itself).
        let mut stop = false;
        loop {
            match received.try_recv() {
                Ok(Message::Record(record)) => write_record(dir, &mut current, &record),
                Ok(Message::Stop) | Err(TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if let Some(file) = current.as_mut() {
            if let Err(e) = file.out.flush() {
                tracing::warn!(error = %e, "flushing the usage log");
            }
        }
        if stop {
            return;
        }
        std::thread::sleep(DRAIN_INTERVAL);
    }
}

fn write_record(dir: &Path, current: &mut Option<DayFile>, record: &UsageRecord) {
    let day = record.at.date_naive();
    if current.as_ref().map(|f| f.day) != Some(day) {
        if let Some(mut old) = current.take() {
            let _ = old.out.flush();
        }
        if let Err(e) = sweep(dir, day) {
            tracing::warn!(error = %e, "sweeping old usage files");
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(file_for(dir, day))
        {
            Ok(file) => {
                *current = Some(DayFile {
                    day,
                    out: BufWriter::with_capacity(256 * 1024, file),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "opening the usage file");
                return;
            }
        }
    }
    if let Some(file) = current.as_mut() {
        let written = serde_json::to_writer(&mut file.out, record)
            .map_err(std::io::Error::from)
            .and_then(|()| file.out.write_all(b"\n"));
        if let Err(e) = written {
            tracing::warn!(error = %e, "writing the usage log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_sweep_deletes_day_files_past_ninety_days_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "2026-08-26.jsonl", // 91 days before 2026-11-25: gone
            "2026-08-27.jsonl", // exactly 90 days: kept
            "2026-11-25.jsonl",
            "notes.txt",
            "2020-01-01.jsonl.bak",
        ] {
            std::fs::write(dir.path().join(name), b"{}\n").unwrap();
        }
        assert_eq!(sweep(dir.path(), day("2026-11-25")).unwrap(), 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "2020-01-01.jsonl.bak",
                "2026-08-27.jsonl",
                "2026-11-25.jsonl",
                "notes.txt"
            ]
        );
    }

    #[test]
    fn records_land_in_their_day_file_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = UsageLog::start(dir.path()).unwrap();
        let at: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let next_day: DateTime<Utc> = "2026-11-26T00:00:01Z".parse().unwrap();
        log.record(UsageRecord::new(
            at,
            "GET",
            Some("/v1/orders/{id}".into()),
            200,
            Duration::from_micros(1_500),
            None,
        ));
        log.record(UsageRecord::new(
            next_day,
            "POST",
            None,
            404,
            Duration::ZERO,
            None,
        ));
        log.close();
        let first = std::fs::read_to_string(dir.path().join("2026-11-25.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(first.trim()).unwrap();
        assert_eq!(line["route"], "/v1/orders/{id}");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_us"], 1_500);
        assert!(line.get("account").is_none());
        let second = std::fs::read_to_string(dir.path().join("2026-11-26.jsonl")).unwrap();
        assert!(second.contains("\"route\":\"unmatched\""));
        assert_eq!(log.dropped(), 0);
    }
}
