//! The journal directory: loading it at start, appending to it, compacting it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ahash::AHashMap;

use super::frame::{FrameReader, NewerFormat, RawFrame, ScanReport};
use super::record::{ListCache, FORMAT_VERSION};
use super::restore::{Merge, TOMBSTONE_RETENTION_SECS};

const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const SEGMENT_PREFIX: &str = "journal-";
const LOCK: &str = "LOCK";

/// Journal bytes since the last snapshot that make a compaction worth its cost, at least:
/// below this, replaying the journal at start takes well under a second.
const COMPACT_MIN_BYTES: u64 = 64 << 20;

/// Journal syncs (`fdatasync`) at most this often; appends in between reach the page
/// cache, which a crash of the process does not lose.
const SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// How often the writer checks on a running compaction while nothing is appended.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Why the journal directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file operation failed.
    #[error("persistence.dir: {path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error (in the message, not chained: it would print twice).
        error: std::io::Error,
    },
    /// Another running gateway holds the directory.
    #[error("persistence.dir: {dir} is in use by another running gateway{pid}; give each gateway its own directory")]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// `" (pid N)"` when the holder wrote its pid.
        pid: String,
    },
    /// A file holds records of a newer format.
    #[error("persistence.dir: {path}: {found}; start the newer gateway again, or move the directory aside to start empty")]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Where and which version.
        found: NewerFormat,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |error| PersistError::Io {
        path: path.to_owned(),
        error,
    }
}

/// What [`load`] found in the directory.
#[derive(Debug)]
pub struct Loaded {
    /// The merged records.
    pub merge: Merge,
    /// Damage skipped, summed over the files.
    pub report: ScanReport,
    /// Files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Size of the snapshot file.
    pub snapshot_bytes: u64,
    /// Number the next journal segment gets.
    pub next_segment: u64,
    /// The directory lock, held for as long as the gateway runs.
    pub lock: File,
    /// The directory.
    pub dir: PathBuf,
    /// How long loading took.
    pub elapsed: Duration,
}

/// Journal segments in `dir`, by number.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, PersistError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Takes the directory's lock (creating the directory), or says who holds it.
fn lock_dir(dir: &Path) -> Result<File, PersistError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let pid = fs::read_to_string(&path)
            .ok()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .map_or(String::new(), |p| format!(" (pid {p})"));
        return Err(PersistError::Locked {
            dir: dir.to_owned(),
            pid,
        });
    }
    file.set_len(0).map_err(io_err(&path))?;
    write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
    Ok(file)
}

/// Refuses a frame written by a newer gateway (see [`NewerFormat`] for why).
fn check_format(path: &Path, frame: &RawFrame<'_>) -> Result<(), PersistError> {
    if frame.version > FORMAT_VERSION {
        return Err(PersistError::NewerFormat {
            path: path.to_owned(),
            found: NewerFormat {
                offset: frame.offset as usize,
                found: frame.version,
            },
        });
    }
    Ok(())
}

/// Feeds every intact record of the file at `path` to `merge`.
fn load_file(path: &Path, merge: &mut Merge) -> Result<(ScanReport, u64), PersistError> {
    let file = File::open(path).map_err(io_err(path))?;
    let bytes = file.metadata().map_err(io_err(path))?.len();
    let mut reader = FrameReader::new(file);
    let mut lists = ListCache::default();
    while let Some(frame) = reader.next_frame().map_err(io_err(path))? {
        check_format(path, &frame)?;
        let len = frame.bytes.len();
        match frame.decode_shared(&mut lists) {
            Ok(record) => merge.apply(record),
            Err(_) => reader.count_undecodable(len),
        }
    }
    Ok((reader.report(), bytes))
}

/// Locks `dir` (creating it) and reads the snapshot and every journal segment.
///
/// Damaged records and torn tails are skipped, counted in [`Loaded::report`] and logged;
/// only I/O errors, a directory held by another gateway and records of a newer format
/// are errors.
pub fn load(dir: &Path) -> Result<Loaded, PersistError> {
    let started = Instant::now();
    let lock = lock_dir(dir)?;
    let tmp = dir.join(SNAPSHOT_TMP);
    if tmp.exists() {
        fs::remove_file(&tmp).map_err(io_err(&tmp))?;
    }
    let mut merge = Merge::new();
    let mut total = ScanReport::default();
    let (mut files, mut bytes, mut snapshot_bytes) = (0, 0, 0);
    let snapshot = dir.join(SNAPSHOT);
    let mut paths = Vec::new();
    if snapshot.exists() {
        paths.push(snapshot.clone());
    }
    let segs = segments(dir)?;
    let next_segment = segs.last().map_or(0, |(n, _)| n + 1);
    paths.extend(segs.into_iter().map(|(_, p)| p));
    for path in paths {
        let (report, len) = load_file(&path, &mut merge)?;
        if report.corrupt > 0 || report.torn_tail > 0 {
            tracing::warn!(
                file = %path.display(),
                kept = report.records,
                damaged_stretches = report.corrupt,
                damaged_bytes = report.corrupt_bytes,
                torn_tail_bytes = report.torn_tail,
                "journal damage skipped: every intact record is kept; a torn tail is the write a crash interrupted, a damaged stretch lost the records in it"
            );
        }
        if path == snapshot {
            snapshot_bytes = len;
        }
        files += 1;
        bytes += len;
        total.records += report.records;
        total.corrupt += report.corrupt;
        total.corrupt_bytes += report.corrupt_bytes;
        total.torn_tail += report.torn_tail;
    }
    Ok(Loaded {
        merge,
        report: total,
        files,
        bytes,
        snapshot_bytes,
        next_segment,
        lock,
        dir: dir.to_owned(),
        elapsed: started.elapsed(),
    })
}

/// Wall-clock time, Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Which frame of which file is the newest for a key.
#[derive(Clone, Copy)]
struct Newest {
    generation: u32,
    tombstone: bool,
    file: u16,
    offset: u64,
}

/// Folds the snapshot and the segments numbered up to `upto` into a new snapshot and
/// deletes those segments. Returns the new snapshot's size.
///
/// Two passes over the files with a fixed-size read buffer: the first finds, per key, the
/// newest frame; the second copies those frames. Memory is one small index entry per
/// key, not the records themselves.
pub fn compact(dir: &Path, upto: u64) -> Result<u64, PersistError> {
    let mut files = Vec::new();
    let snapshot = dir.join(SNAPSHOT);
    if snapshot.exists() {
        files.push(snapshot.clone());
    }
    let retired: Vec<PathBuf> = segments(dir)?
        .into_iter()
        .filter(|(n, _)| *n <= upto)
        .map(|(_, p)| p)
        .collect();
    files.extend(retired.iter().cloned());

    let mut newest: AHashMap<u64, Newest> = AHashMap::new();
    for (i, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(io_err(path))?;
        let mut reader = FrameReader::new(file);
        while let Some(frame) = reader.next_frame().map_err(io_err(path))? {
            check_format(path, &frame)?;
            let Ok((key, generation, tombstone)) = frame.key_and_generation() else {
                continue;
            };
            let candidate = Newest {
                generation,
                tombstone,
                file: i as u16,
                offset: frame.offset,
            };
            // Same rule as `Merge::apply`: higher generation wins, a later frame wins a
            // tie, and a tombstone beats the state of equal generation.
            let replace = match newest.get(&key) {
                None => true,
                Some(held) => {
                    generation > held.generation
                        || (generation == held.generation && (tombstone || !held.tombstone))
                }
            };
            if replace {
                newest.insert(key, candidate);
            }
        }
    }

    let now = unix_now();
    let tmp = dir.join(SNAPSHOT_TMP);
    let out = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    for (i, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(io_err(path))?;
        let mut reader = FrameReader::new(file);
        while let Some(frame) = reader.next_frame().map_err(io_err(path))? {
            let Ok((key, _, tombstone)) = frame.key_and_generation() else {
                continue;
            };
            let keep = newest
                .get(&key)
                .is_some_and(|n| n.file == i as u16 && n.offset == frame.offset);
            if !keep {
                continue;
            }
            if tombstone {
                // Tombstones only matter while a stale record could still arrive.
                let Ok(super::Record::Removed { at_unix, .. }) = frame.decode() else {
                    continue;
                };
                if at_unix + TOMBSTONE_RETENTION_SECS < now {
                    continue;
                }
            }
            out.write_all(frame.bytes).map_err(io_err(&tmp))?;
        }
    }
    let out = out.into_inner().map_err(|e| PersistError::Io {
        path: tmp.clone(),
        error: e.into_error(),
    })?;
    out.sync_all().map_err(io_err(&tmp))?;
    let size = out.metadata().map_err(io_err(&tmp))?.len();
    drop(out);
    fs::rename(&tmp, &snapshot).map_err(io_err(&snapshot))?;
    sync_dir(dir)?;
    for path in retired {
        fs::remove_file(&path).map_err(io_err(&path))?;
    }
    Ok(size)
}

/// Returns freed heap to the OS. After a compaction (its index, its read buffers) and a
/// restore (the decoded records, gone once the shards built their own), glibc would keep
/// the freed blocks in its arenas, and RSS would carry the peak for good.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

enum Msg {
    Append(Vec<u8>),
    Stop,
}

/// A shard's handle to the journal: sends its buffer each flush interval.
#[derive(Debug, Clone)]
pub struct JournalSender {
    tx: Sender<Msg>,
}

impl JournalSender {
    /// Queues `bytes` for appending.
    pub fn append(&self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if self.tx.send(Msg::Append(bytes)).is_err() {
            tracing::error!("journal writer is gone; changes are not persisted");
        }
    }
}

/// The node's journal writer: a thread off the data path that appends what shards send,
/// syncs it, and compacts the directory when the journal has grown.
#[derive(Debug)]
pub struct JournalWriter {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

struct WriterState {
    dir: PathBuf,
    segment: u64,
    file: File,
    /// Bytes in segments since the last snapshot.
    journal_bytes: u64,
    snapshot_bytes: u64,
    compacting: Option<(u64, JoinHandle<Result<u64, PersistError>>)>,
    _lock: File,
}

impl JournalWriter {
    /// Starts the writer on the directory [`load`] read, appending to a new segment.
    pub fn start(loaded: Loaded) -> Result<JournalWriter, PersistError> {
        let file = open_segment(&loaded.dir, loaded.next_segment)?;
        let mut state = WriterState {
            segment: loaded.next_segment,
            file,
            journal_bytes: loaded.bytes - loaded.snapshot_bytes,
            snapshot_bytes: loaded.snapshot_bytes,
            compacting: None,
            dir: loaded.dir,
            _lock: loaded.lock,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || state.run(rx))
            .map_err(|error| PersistError::Io {
                path: PathBuf::from("journal thread"),
                error,
            })?;
        Ok(JournalWriter {
            tx,
            thread: Some(thread),
        })
    }

    /// A handle for a shard.
    pub fn sender(&self) -> JournalSender {
        JournalSender {
            tx: self.tx.clone(),
        }
    }

    /// Appends everything sent so far, compacts, and stops. Call after every shard sent
    /// its last buffer.
    pub fn stop(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("journal writer panicked");
            }
        }
    }
}

fn open_segment(dir: &Path, n: u64) -> Result<File, PersistError> {
    let path = dir.join(format!("{SEGMENT_PREFIX}{n:08}"));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))
}

impl WriterState {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        loop {
            let first = match rx.recv_timeout(IDLE_POLL) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut stop = false;
            let mut wrote = false;
            for msg in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match msg {
                    Msg::Append(bytes) => {
                        self.append(&bytes);
                        wrote = true;
                    }
                    Msg::Stop => stop = true,
                }
            }
            unsynced |= wrote;
            if unsynced && (stop || last_sync.elapsed() >= SYNC_INTERVAL) {
                // A crash of the process loses nothing written; syncing also covers a
                // crash of the machine, at most this often.
                if let Err(e) = self.file.sync_data() {
                    tracing::warn!("journal sync failed: {e}");
                }
                last_sync = Instant::now();
                unsynced = false;
            }
            self.reap_compaction(false);
            if stop {
                break;
            }
            if self.compacting.is_none()
                && self.journal_bytes > COMPACT_MIN_BYTES.max(self.snapshot_bytes)
            {
                self.start_compaction();
            }
        }
        // Shutdown: fold everything into the snapshot so the next start reads one file.
        self.reap_compaction(true);
        self.start_compaction();
        self.reap_compaction(true);
        if self.journal_bytes == 0 {
            let path = self
                .dir
                .join(format!("{SEGMENT_PREFIX}{:08}", self.segment));
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), "cannot remove the empty journal segment: {e}");
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        match self.file.write_all(bytes) {
            Ok(()) => self.journal_bytes += bytes.len() as u64,
            Err(e) => tracing::error!(
                dir = %self.dir.display(),
                bytes = bytes.len(),
                "journal append failed, these changes are not persisted: {e}"
            ),
        }
    }

    fn start_compaction(&mut self) {
        let upto = self.segment;
        match open_segment(&self.dir, upto + 1) {
            Ok(file) => {
                self.file = file;
                self.segment = upto + 1;
            }
            Err(e) => {
                tracing::error!("cannot rotate the journal: {e}");
                return;
            }
        }
        let dir = self.dir.clone();
        let bytes = self.journal_bytes;
        self.journal_bytes = 0;
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("journal-compact".into())
            .spawn(move || {
                let r = compact(&dir, upto);
                if let Ok(size) = &r {
                    tracing::info!(
                        journal_bytes = bytes,
                        snapshot_bytes = size,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "journal compacted"
                    );
                }
                r
            });
        match spawned {
            Ok(handle) => self.compacting = Some((bytes, handle)),
            Err(e) => {
                self.journal_bytes += bytes;
                tracing::error!("cannot start journal compaction: {e}");
            }
        }
    }

    fn reap_compaction(&mut self, wait: bool) {
        let done = self
            .compacting
            .as_ref()
            .is_some_and(|(_, h)| wait || h.is_finished());
        if !done {
            return;
        }
        let Some((bytes, handle)) = self.compacting.take() else {
            return;
        };
        match handle.join() {
            Ok(Ok(size)) => {
                self.snapshot_bytes = size;
                release_freed_memory();
            }
            Ok(Err(e)) => {
                // The segments stay; the next compaction folds them in.
                self.journal_bytes += bytes;
                tracing::error!("journal compaction failed: {e}");
            }
            Err(_) => {
                self.journal_bytes += bytes;
                tracing::error!("journal compaction panicked");
            }
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
