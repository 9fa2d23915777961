//! The write-ahead log of network ingest (`tidemark serve --data-dir`).
//!
//! With a log, a request sent to the `grpc`, `remote_write` or `otlp`
//! listener is acknowledged only once its samples are a record of the log
//! (and, with `fsync: always`, on disk), and the network sources read the
//! log, not a queue in memory: after `kill -9` they read it again from
//! their last checkpoint, so what was acknowledged is not lost.
//!
//! **Files.** `DIR/wal/` holds segment files named by the offset of their
//! first record (`00000000000000000042.seg`); a record's offset is its
//! number in the log. A record is `len: u32, crc32: u32, body`, the body a
//! header (protocol, tenant, largest timestamp, sample count) and the
//! samples as bincode (the serde encoding timely gives records between
//! processes), with variable-length integers. A new segment starts when the current one passes
//! `segment_bytes`. Opening checks every record's checksum: a torn or
//! corrupt record and everything after it in its segment is cut off and
//! reported, never fatal; later segments are kept, and readers step over
//! the gap.
//!
//! **Durability.** Records become readable once synced (`fsync: always`,
//! with group commit: one `fdatasync` covers every record written while
//! the previous one ran), every interval (`fsync: 100ms`: acknowledged
//! before they are on disk, as Prometheus' own WAL), or at once (`fsync:
//! never`). Readers see synced records only, so no checkpoint is ever
//! ahead of what the disk holds.
//!
//! **Positions.** Each network source stores, per worker of this process,
//! the offset up to which its records can no longer change output that is
//! not durable (in a checkpointed pipeline: its position at the newest
//! complete checkpoint), the largest timestamp before it and the sinks'
//! durable frontier (`DIR/wal/positions.json`, written through a synced temporary
//! file). A restart resumes every worker from the smallest stored offset;
//! segments every stored position has passed are deleted. The log is
//! bounded (`max_bytes`): when full, or when its disk has less than
//! `reserve_bytes` free (room kept for checkpoints and positions), ingest
//! is refused with backpressure until the sources catch up.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bincode::Options as _;
use serde::{Deserialize, Serialize};

use crate::Sample;
use crate::ingest::Protocol;
use crate::runtime::SyncActivator;
use crate::time::{Millis, Time};

/// When records are synced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before the request is acknowledged (group commit).
    Always,
    /// Every interval; a request is acknowledged when written.
    Every(Duration),
    /// Never by Tidemark (the operating system writes back): survives a
    /// crash of the process, not of the machine.
    Never,
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(text: &str) -> Result<Fsync, String> {
        match text.trim() {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            other => match crate::time::parse_duration(other) {
                Ok(d) if !d.is_zero() => Ok(Fsync::Every(d)),
                _ => Err(format!(
                    "`{other}` is not an fsync policy: `always`, `never` or an interval such as `100ms`"
                )),
            },
        }
    }
}

/// How the log is kept.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// When records are synced.
    pub fsync: Fsync,
    /// A new segment starts past this size.
    pub segment_bytes: u64,
    /// The most the log may hold; past it, ingest is refused.
    pub max_bytes: u64,
    /// Recent records kept decoded in memory, so that sources keeping up
    /// do not read them back from disk.
    pub cache_bytes: u64,
    /// Free space the log leaves on its disk: below it ingest is refused,
    /// so that checkpoints and positions (which let the log delete
    /// segments) can still be written.
    pub reserve_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            fsync: Fsync::Always,
            segment_bytes: 64 << 20,
            max_bytes: 2 << 30,
            cache_bytes: 64 << 20,
            reserve_bytes: 64 << 20,
        }
    }
}

/// Why a record was not appended: nothing of it is in the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The log holds `max_bytes`: a pipeline is behind.
    #[error(
        "the write-ahead log is full ({0} MiB not yet passed by every pipeline; a window holds its records until it closes, so the log must hold more than the longest window's samples: raise --wal-max-mb if this lasts); retry later"
    )]
    Full(u64),
    /// The disk has less free space than the log leaves for checkpoints.
    #[error(
        "the disk of the write-ahead log is nearly full ({free_mib} MiB free, {reserve_mib} MiB kept for checkpoints and positions); ingest resumes once pipelines let the log delete segments, or once space is freed; retry later"
    )]
    DiskFull {
        /// MiB free.
        free_mib: u64,
        /// MiB the log leaves free.
        reserve_mib: u64,
    },
    /// The disk refused the write (full, or failing).
    #[error("cannot write the write-ahead log {path}: {error}; retry later")]
    Io {
        /// The segment.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

/// What a reader needs of a record before it decides to decode it.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The listener it came through.
    pub protocol: Protocol,
    /// The sender's tenant, if its credential named one.
    pub tenant: Option<Arc<str>>,
    /// Its largest timestamp.
    pub max_ts: Millis,
    /// How many samples it holds.
    pub count: u32,
}

/// A record of the log.
#[derive(Debug)]
pub struct Entry {
    /// Its header.
    pub header: Header,
    /// Its samples, as validated when they arrived.
    pub samples: Vec<Sample>,
}

fn protocol_code(p: Protocol) -> u8 {
    match p {
        Protocol::Grpc => 0,
        Protocol::Otlp => 1,
        Protocol::RemoteWrite => 2,
    }
}

fn protocol_from(code: u8) -> Option<Protocol> {
    match code {
        0 => Some(Protocol::Grpc),
        1 => Some(Protocol::Otlp),
        2 => Some(Protocol::RemoteWrite),
        _ => None,
    }
}

/// Bytes before the body: length and checksum.
const FRAME: usize = 8;
/// Bytes of a header without its tenant.
const HEADER: usize = 1 + 8 + 4 + 2;

fn encode_header(h: &Header, out: &mut Vec<u8>) {
    out.push(protocol_code(h.protocol));
    out.extend_from_slice(&h.max_ts.to_le_bytes());
    out.extend_from_slice(&h.count.to_le_bytes());
    let tenant = h.tenant.as_deref().unwrap_or("").as_bytes();
    let len = tenant.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&tenant[..len]);
}

/// Reads a header from the start of a body; returns it and its length.
fn decode_header(body: &[u8]) -> Option<(Header, usize)> {
    if body.len() < HEADER {
        return None;
    }
    let protocol = protocol_from(body[0])?;
    let max_ts = i64::from_le_bytes(body[1..9].try_into().ok()?);
    let count = u32::from_le_bytes(body[9..13].try_into().ok()?);
    let len = u16::from_le_bytes(body[13..15].try_into().ok()?) as usize;
    let tenant = body.get(HEADER..HEADER + len)?;
    let tenant = std::str::from_utf8(tenant).ok()?;
    let header = Header {
        protocol,
        tenant: (!tenant.is_empty()).then(|| Arc::from(tenant)),
        max_ts,
        count,
    };
    Some((header, HEADER + len))
}

/// The samples' encoding: bincode with variable-length integers (string
/// lengths and timestamps take a byte or a few, not eight).
fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_varint_encoding()
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    bytes: u64,
}

struct Writer {
    file: Arc<File>,
    segments: VecDeque<Segment>,
    next: u64,
    bytes: u64,
    cache: VecDeque<(u64, Arc<Entry>, u64)>,
    cache_bytes: u64,
    buf: Vec<u8>,
    /// The disk had little free space at the last look.
    low_disk: bool,
}

/// Where a source resumes reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The first offset to read.
    pub offset: u64,
    /// The largest timestamp of the source's records before it.
    pub max_seen: Option<Millis>,
    /// The sinks' durable frontier stored with it (0 for a new source).
    pub durable: Time,
}

/// One worker's stored position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Every record of this worker below it is done.
    pub offset: u64,
    /// The largest timestamp before it.
    pub max_seen: Option<Millis>,
    /// The sinks' durable frontier when it was stored.
    pub durable: Time,
}

/// A source's positions: where it started, and each worker's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePositions {
    /// The log's end when the source first subscribed.
    pub start: u64,
    /// Per worker of this process (`None`: nothing stored yet).
    pub workers: Vec<Option<Position>>,
}

impl SourcePositions {
    fn resumed(&self) -> Resumed {
        let mut out = Resumed {
            offset: self.start,
            max_seen: None,
            durable: 0,
        };
        let mut min: Option<Position> = None;
        let mut any_missing = self.workers.is_empty();
        for w in &self.workers {
            match w {
                Some(p) => {
                    out.durable = out.durable.max(p.durable);
                    if min.is_none_or(|m| p.offset < m.offset) {
                        min = Some(*p);
                    }
                }
                None => any_missing = true,
            }
        }
        if let (Some(m), false) = (min, any_missing) {
            out.offset = m.offset;
            out.max_seen = m.max_seen;
        }
        out
    }

    fn low(&self) -> u64 {
        self.resumed().offset
    }
}

type Positions = BTreeMap<String, BTreeMap<String, SourcePositions>>;

/// What the appenders share with the sync thread.
struct Shared {
    writer: Mutex<Writer>,
    written: Condvar,
}

/// The log.
pub struct Wal {
    dir: PathBuf,
    /// Held locked while the log is open.
    _lock: File,
    options: WalOptions,
    shared: Arc<Shared>,
    readable: AtomicU64,
    synced: tokio::sync::watch::Sender<u64>,
    activators: Mutex<Vec<SyncActivator>>,
    positions: Mutex<Positions>,
    /// More than half full, or its disk nearly full (read without the
    /// writer's lock, by sources deciding checkpoints).
    filling: AtomicBool,
    /// Since when ingest has been refused (full, or the disk nearly so),
    /// if it is now.
    refusing_since: Mutex<Option<Instant>>,
}

fn io_err(path: &Path, error: std::io::Error) -> WalError {
    WalError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Bytes free for this process on the file system of `dir` (`u64::MAX`
/// if it cannot be read: the writes themselves then say).
fn free_bytes(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir).map_or(u64::MAX, |s| s.f_bavail.saturating_mul(s.f_frsize))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a scan of a segment found.
struct Scanned {
    records: u64,
    valid_bytes: u64,
    bad: Option<String>,
}

/// Reads a segment record by record, checking checksums.
fn scan(path: &Path) -> std::io::Result<Scanned> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut at = 0u64;
    let mut records = 0;
    let mut body = Vec::new();
    loop {
        if at == len {
            return Ok(Scanned {
                records,
                valid_bytes: at,
                bad: None,
            });
        }
        let bad = |why: String| Scanned {
            records,
            valid_bytes: at,
            bad: Some(why),
        };
        if len - at < FRAME as u64 {
            return Ok(bad(format!("a torn record ({} bytes)", len - at)));
        }
        let mut frame = [0u8; FRAME];
        r.read_exact(&mut frame)?;
        let n = u32::from_le_bytes(frame[..4].try_into().unwrap_or_default()) as u64;
        let crc = u32::from_le_bytes(frame[4..].try_into().unwrap_or_default());
        if n > len - at - FRAME as u64 {
            return Ok(bad(format!("a torn record ({} bytes)", len - at)));
        }
        body.resize(n as usize, 0);
        r.read_exact(&mut body)?;
        if crc32fast::hash(&body) != crc || decode_header(&body).is_none() {
            return Ok(bad("a record whose checksum does not match".to_owned()));
        }
        at += FRAME as u64 + n;
        records += 1;
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir/wal`, cutting off a torn or
    /// corrupt tail of any segment (reported as a warning), and starts
    /// its sync thread.
    pub fn open(dir: &Path, options: WalOptions) -> anyhow::Result<Arc<Wal>> {
        let dir = dir.join("wal");
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        // One process per log: two writing one directory would interleave
        // records.
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", lock_path.display()))?;
        rustix::fs::flock(
            &lock_file,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is in use by another process ({e}): every process needs its own --data-dir",
                dir.display()
            )
        })?;
        let mut firsts: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
                firsts.push(n);
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut bytes = 0;
        let mut next = 0;
        for first in firsts {
            let path = dir.join(segment_name(first));
            let scanned =
                scan(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            if let Some(why) = &scanned.bad {
                let len = std::fs::metadata(&path)?.len();
                tracing::warn!(
                    segment = %path.display(),
                    offset = first + scanned.records,
                    cut_bytes = len - scanned.valid_bytes,
                    "The write-ahead log holds {why}: it and the rest of its segment are cut off (records that were never acknowledged, or lost with the disk)."
                );
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| {
                        f.set_len(scanned.valid_bytes)?;
                        f.sync_all()
                    })
                    .map_err(|e| anyhow::anyhow!("cannot cut {}: {e}", path.display()))?;
            }
            bytes += scanned.valid_bytes;
            next = first + scanned.records;
            segments.push_back(Segment {
                first,
                path,
                bytes: scanned.valid_bytes,
            });
        }
        // Appends go to a fresh segment: a cut one is never written again.
        let path = dir.join(segment_name(next));
        let file = match segments.back() {
            Some(s) if s.first == next => OpenOptions::new().append(true).open(&path),
            _ => OpenOptions::new().create(true).append(true).open(&path),
        }
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        if segments.back().is_none_or(|s| s.first != next) {
            segments.push_back(Segment {
                first: next,
                path,
                bytes: 0,
            });
        }
        sync_dir(&dir)?;
        let positions: Positions = match std::fs::read(dir.join("positions.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} does not parse ({e}): move it away to start every source at the log's end",
                    dir.join("positions.json").display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Positions::default(),
            Err(e) => anyhow::bail!("cannot read {}: {e}", dir.join("positions.json").display()),
        };
        let (synced, _) = tokio::sync::watch::channel(next);
        let filling = bytes.saturating_mul(2) > options.max_bytes;
        let wal = Arc::new(Wal {
            dir,
            _lock: lock_file,
            options,
            shared: Arc::new(Shared {
                writer: Mutex::new(Writer {
                    file: Arc::new(file),
                    segments,
                    next,
                    bytes,
                    cache: VecDeque::new(),
                    cache_bytes: 0,
                    buf: Vec::new(),
                    low_disk: false,
                }),
                written: Condvar::new(),
            }),
            readable: AtomicU64::new(next),
            synced,
            activators: Mutex::default(),
            positions: Mutex::new(positions),
            filling: AtomicBool::new(filling),
            refusing_since: Mutex::new(None),
        });
        if wal.options.fsync != Fsync::Never {
            let (weak, shared) = (Arc::downgrade(&wal), Arc::clone(&wal.shared));
            std::thread::Builder::new()
                .name("wal-sync".to_owned())
                .spawn(move || sync_loop(&weak, &shared))?;
        }
        Ok(wal)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        lock(&self.shared.writer).bytes
    }

    /// Whether the log is more than half full, or its disk nearly so:
    /// checkpoints are then cut as often as they can be, so that positions
    /// move on and segments can be deleted.
    pub fn filling(&self) -> bool {
        self.filling.load(Ordering::Relaxed)
    }

    /// How long ingest has been refused without a pause (full, or its disk
    /// nearly so), if it is now.
    pub fn refusing_for(&self) -> Option<Duration> {
        lock(&self.refusing_since).map(|t| t.elapsed())
    }

    fn note_filling(&self, w: &Writer) {
        self.filling.store(
            w.low_disk || w.bytes.saturating_mul(2) > self.options.max_bytes,
            Ordering::Relaxed,
        );
    }

    fn refused(&self, error: WalError) -> WalError {
        lock(&self.refusing_since).get_or_insert_with(Instant::now);
        error
    }

    /// Appends a record of `samples` (none empty), sent through
    /// `protocol` by `tenant`. Returns its offset: it is durable once
    /// [`Wal::durable`] says so.
    pub fn append(
        &self,
        protocol: Protocol,
        tenant: Option<&str>,
        samples: &[Sample],
    ) -> Result<u64, WalError> {
        let header = Header {
            protocol,
            tenant: tenant.map(Arc::from),
            max_ts: samples
                .iter()
                .map(|s| s.timestamp)
                .max()
                .unwrap_or(i64::MIN),
            count: samples.len().min(u32::MAX as usize) as u32,
        };
        let mut guard = lock(&self.shared.writer);
        if guard.bytes >= self.options.max_bytes {
            return Err(self.refused(WalError::Full(self.options.max_bytes >> 20)));
        }
        // The disk's free space, looked at on every record (a `statvfs`,
        // cheap beside the write): checkpoints hurry as soon as it runs low.
        let free = free_bytes(&self.dir);
        guard.low_disk = free < self.options.reserve_bytes.saturating_mul(2);
        self.note_filling(&guard);
        if free < self.options.reserve_bytes {
            return Err(self.refused(WalError::DiskFull {
                free_mib: free >> 20,
                reserve_mib: self.options.reserve_bytes >> 20,
            }));
        }
        let w = &mut *guard;
        w.buf.clear();
        w.buf.extend_from_slice(&[0; FRAME]);
        encode_header(&header, &mut w.buf);
        codec()
            .serialize_into(&mut w.buf, samples)
            .map_err(|e| io_err(&self.dir, std::io::Error::other(e.to_string())))?;
        let body = (w.buf.len() - FRAME) as u32;
        let crc = crc32fast::hash(&w.buf[FRAME..]);
        w.buf[..4].copy_from_slice(&body.to_le_bytes());
        w.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let size = w.buf.len() as u64;
        let current = w.segments.back().map_or(0, |s| s.bytes);
        if current > 0 && current + size > self.options.segment_bytes {
            self.roll(w)?;
        }
        let Some(segment) = w.segments.back_mut() else {
            return Err(io_err(&self.dir, std::io::Error::other("no segment")));
        };
        if let Err(error) = (&*w.file).write_all(&w.buf) {
            // Cut a partial record back off, so the next append starts clean.
            let _ = w.file.set_len(segment.bytes);
            return Err(io_err(&segment.path, error));
        }
        segment.bytes += size;
        w.bytes += size;
        self.note_filling(w);
        *lock(&self.refusing_since) = None;
        let offset = w.next;
        w.next += 1;
        let entry = Arc::new(Entry {
            header,
            samples: samples.to_vec(),
        });
        w.cache.push_back((offset, entry, size));
        w.cache_bytes += size;
        while w.cache_bytes > self.options.cache_bytes {
            let Some((_, _, n)) = w.cache.pop_front() else {
                break;
            };
            w.cache_bytes -= n;
        }
        let next = w.next;
        drop(guard);
        match self.options.fsync {
            Fsync::Never => self.publish(next),
            Fsync::Always => self.shared.written.notify_one(),
            Fsync::Every(_) => {}
        }
        Ok(offset)
    }

    /// Starts a new segment at the next offset; the old one is synced
    /// first, so a sync of the new file covers everything before it.
    fn roll(&self, w: &mut Writer) -> Result<(), WalError> {
        if self.options.fsync != Fsync::Never {
            let path = w
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            w.file.sync_data().map_err(|e| io_err(&path, e))?;
        }
        let path = self.dir.join(segment_name(w.next));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        sync_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        w.file = Arc::new(file);
        w.segments.push_back(Segment {
            first: w.next,
            path,
            bytes: 0,
        });
        Ok(())
    }

    fn publish(&self, readable: u64) {
        let before = self.readable.fetch_max(readable, Ordering::AcqRel);
        if readable > before {
            self.synced.send_replace(readable);
            for a in lock(&self.activators).iter() {
                let _ = a.activate();
            }
        }
    }

    /// Waits until the record at `offset` is as durable as the policy
    /// makes it (at once unless `fsync: always`).
    pub async fn durable(&self, offset: u64) {
        if self.options.fsync != Fsync::Always {
            return;
        }
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|r| *r > offset).await;
    }

    /// Offsets below this are readable.
    pub fn readable(&self) -> u64 {
        self.readable.load(Ordering::Acquire)
    }

    /// The offset the next record gets.
    pub fn end(&self) -> u64 {
        lock(&self.shared.writer).next
    }

    /// Wakes `activator` whenever records become readable.
    pub fn wake(&self, activator: SyncActivator) {
        lock(&self.activators).push(activator);
    }

    fn cached(&self, offset: u64) -> Option<Arc<Entry>> {
        let w = lock(&self.shared.writer);
        let first = w.cache.front()?.0;
        let (o, e, _) = w.cache.get(offset.checked_sub(first)? as usize)?;
        (*o == offset).then(|| Arc::clone(e))
    }

    /// The segment holding `offset` (the first one after a gap), if any.
    fn segment_for(&self, offset: u64) -> Option<(u64, PathBuf)> {
        let w = lock(&self.shared.writer);
        let i = w.segments.partition_point(|s| s.first <= offset);
        let s = if i == 0 {
            w.segments.front()?
        } else {
            &w.segments[i - 1]
        };
        Some((s.first, s.path.clone()))
    }

    fn next_segment(&self, after: u64) -> Option<(u64, PathBuf)> {
        let w = lock(&self.shared.writer);
        w.segments
            .iter()
            .find(|s| s.first > after)
            .map(|s| (s.first, s.path.clone()))
    }

    /// A reader from `offset`.
    pub fn reader(self: &Arc<Wal>, offset: u64) -> Reader {
        Reader {
            wal: Arc::clone(self),
            next: offset,
            file: None,
            body: Vec::new(),
        }
    }

    /// Where (`pipeline`, `source`) resumes; a source seen for the first
    /// time starts at the log's end, which is stored at once so that a
    /// crash before its first checkpoint resumes there.
    pub fn subscribe(&self, pipeline: &str, source: &str) -> std::io::Result<Resumed> {
        let end = self.end();
        let mut p = lock(&self.positions);
        let entry = p
            .entry(pipeline.to_owned())
            .or_default()
            .entry(source.to_owned());
        let resumed = match entry {
            std::collections::btree_map::Entry::Occupied(e) => e.get().resumed(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(SourcePositions {
                    start: end,
                    workers: Vec::new(),
                });
                self.store(&p)?;
                return Ok(Resumed {
                    offset: end,
                    max_seen: None,
                    durable: 0,
                });
            }
        };
        Ok(resumed)
    }

    /// Stores worker `worker` (of `workers` in this process) of
    /// (`pipeline`, `source`) at `position`, and deletes the segments
    /// every source has passed.
    pub fn commit(
        &self,
        pipeline: &str,
        source: &str,
        worker: usize,
        workers: usize,
        position: Position,
    ) -> std::io::Result<()> {
        let low = {
            let mut p = lock(&self.positions);
            // Gone: the pipeline was deleted (its last commit comes late).
            let Some(s) = p.get_mut(pipeline).and_then(|p| p.get_mut(source)) else {
                return Ok(());
            };
            if s.workers.len() != workers {
                // Another worker count than the run that stored them: this
                // run resumed every worker from the same place.
                let r = s.resumed();
                let resumed = (!s.workers.is_empty()).then_some(Position {
                    offset: r.offset,
                    max_seen: r.max_seen,
                    durable: r.durable,
                });
                s.workers = vec![resumed; workers];
            }
            s.workers[worker] = Some(position);
            self.store(&p)?;
            p.values()
                .flat_map(|s| s.values())
                .map(SourcePositions::low)
                .min()
        };
        if let Some(low) = low {
            self.retain(low);
        }
        Ok(())
    }

    /// Forgets every position of `pipeline` (deleted): its records are no
    /// longer kept for it.
    pub fn forget(&self, pipeline: &str) -> std::io::Result<()> {
        let mut p = lock(&self.positions);
        if p.remove(pipeline).is_some() {
            self.store(&p)?;
        }
        Ok(())
    }

    fn store(&self, positions: &Positions) -> std::io::Result<()> {
        let path = self.dir.join("positions.json");
        let tmp = self.dir.join("positions.json.tmp");
        let bytes = serde_json::to_vec_pretty(positions)?;
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    /// Deletes the segments whose records are all below `low`.
    fn retain(&self, low: u64) {
        let mut w = lock(&self.shared.writer);
        while w.segments.len() > 1 && w.segments[1].first <= low {
            let Some(s) = w.segments.pop_front() else {
                break;
            };
            match std::fs::remove_file(&s.path) {
                Ok(()) => {
                    w.bytes = w.bytes.saturating_sub(s.bytes);
                    self.note_filling(&w);
                }
                Err(error) => {
                    tracing::warn!(segment = %s.path.display(), %error, "Cannot delete a write-ahead log segment every pipeline has passed.");
                    w.segments.push_front(s);
                    break;
                }
            }
        }
    }
}

/// Syncs what was written and publishes it readable, until the log is
/// dropped (it waits without holding the log, so dropping the log
/// releases its directory at once).
fn sync_loop(wal: &std::sync::Weak<Wal>, shared: &Shared) {
    let mut readable = 0;
    loop {
        let (file, target) = {
            let mut w = lock(&shared.writer);
            let (every, wait) = match wal.upgrade().map(|w| w.options.fsync) {
                None => return,
                Some(Fsync::Every(d)) => (true, d),
                Some(_) => (false, Duration::from_millis(200)),
            };
            if every || w.next == readable {
                w = shared
                    .written
                    .wait_timeout(w, wait)
                    .map(|r| r.0)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            (Arc::clone(&w.file), w.next)
        };
        let Some(wal) = wal.upgrade() else { return };
        readable = wal.readable();
        if target > readable {
            match file.sync_data() {
                Ok(()) => {
                    wal.publish(target);
                    readable = target;
                }
                Err(error) => {
                    tracing::error!(dir = %wal.dir.display(), %error, "Cannot sync the write-ahead log; retrying.");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Reads the log in order.
pub struct Reader {
    wal: Arc<Wal>,
    next: u64,
    /// The segment read (its first offset), the next offset in it.
    file: Option<(u64, u64, BufReader<File>)>,
    body: Vec<u8>,
}

/// What a reader returns for one record.
pub enum Next {
    /// A record the caller wanted, decoded.
    Entry(u64, Arc<Entry>),
    /// A record the caller did not want: its header only.
    Skipped(u64, Header),
    /// Records lost to a cut (a corrupt segment): offsets `from..to`.
    Lost(u64, u64),
    /// A record that could not be read or decoded.
    Bad(u64, String),
}

impl Reader {
    /// The next offset it reads.
    pub fn offset(&self) -> u64 {
        self.next
    }

    /// The next readable record; `want` says from its header whether to
    /// decode it. `None` when it is at the readable end.
    pub fn next(&mut self, want: impl Fn(u64, &Header) -> bool) -> Option<Next> {
        let offset = self.next;
        if offset >= self.wal.readable() {
            return None;
        }
        if let Some(e) = self.wal.cached(offset) {
            self.next += 1;
            self.file = None;
            return Some(if want(offset, &e.header) {
                Next::Entry(offset, e)
            } else {
                Next::Skipped(offset, e.header.clone())
            });
        }
        match self.read_file(offset, want) {
            Ok(r) => Some(r),
            Err(e) => {
                // Step over it: a reader that cannot go on would stall.
                self.next = offset + 1;
                self.file = None;
                Some(Next::Bad(offset, e.to_string()))
            }
        }
    }

    fn position(&mut self, offset: u64) -> std::io::Result<Option<Next>> {
        let Some((first, path)) = self.wal.segment_for(offset) else {
            return Err(std::io::Error::other("no segment"));
        };
        if self
            .file
            .as_ref()
            .is_some_and(|(s, o, _)| *o == offset && *s == first)
        {
            return Ok(None);
        }
        if first > offset {
            // Retention or a cut removed it.
            self.next = first;
            return Ok(Some(Next::Lost(offset, first)));
        }
        let mut r = BufReader::with_capacity(1 << 20, File::open(&path)?);
        let mut at = first;
        while at < offset {
            let mut frame = [0u8; FRAME];
            if r.read_exact(&mut frame).is_err() {
                // The segment was cut before `offset`.
                return Ok(Some(self.gap(offset, first)));
            }
            let n = u32::from_le_bytes(frame[..4].try_into().unwrap_or_default());
            r.seek_relative(i64::from(n))?;
            at += 1;
        }
        self.file = Some((first, offset, r));
        Ok(None)
    }

    fn gap(&mut self, offset: u64, first: u64) -> Next {
        let to = self
            .wal
            .next_segment(first)
            .map_or_else(|| self.wal.readable(), |(f, _)| f);
        self.next = to.max(offset + 1);
        self.file = None;
        Next::Lost(offset, self.next)
    }

    fn read_file(
        &mut self,
        offset: u64,
        want: impl Fn(u64, &Header) -> bool,
    ) -> std::io::Result<Next> {
        if let Some(r) = self.position(offset)? {
            return Ok(r);
        }
        let Some((first, at, r)) = self.file.as_mut() else {
            return Err(std::io::Error::other("no segment"));
        };
        let mut frame = [0u8; FRAME];
        if r.read_exact(&mut frame).is_err() {
            // The segment ends before `offset`: it was cut.
            let first = *first;
            return Ok(self.gap(offset, first));
        }
        let n = u32::from_le_bytes(frame[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(frame[4..].try_into().unwrap_or_default());
        self.body.resize(n, 0);
        r.read_exact(&mut self.body)?;
        *at += 1;
        self.next += 1;
        let Some((header, len)) = decode_header(&self.body) else {
            return Ok(Next::Bad(
                offset,
                "a record whose header does not parse".to_owned(),
            ));
        };
        if !want(offset, &header) {
            return Ok(Next::Skipped(offset, header));
        }
        if crc32fast::hash(&self.body) != crc {
            return Ok(Next::Bad(
                offset,
                "a record whose checksum does not match".to_owned(),
            ));
        }
        match codec().deserialize::<Vec<Sample>>(&self.body[len..]) {
            Ok(samples) => Ok(Next::Entry(offset, Arc::new(Entry { header, samples }))),
            Err(e) => Ok(Next::Bad(
                offset,
                format!("a record that does not decode: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
