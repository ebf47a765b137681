//! Write-ahead log: every write is appended here before it is acknowledged.
//!
//! Files `{seq:020}.wal` in one directory, each `VIGILWAL` then records
//! `len:u32le crc32c:u32le payload`. One writer thread owns the open file and commits in
//! groups: it drains every append queued while the previous group was being written, writes
//! them with one `write`, syncs once (policy `always`), then acknowledges them all. A rotation
//! closes the current file and opens the next; the persister deletes files whose contents
//! reached Parquet. Replay reads files in order and stops a file at the first record that is
//! short or fails its CRC (a torn tail after a crash), with a warning.

pub mod codec;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::{info, warn};

const MAGIC: &[u8; 8] = b"VIGILWAL";
const RECORD_HEADER_BYTES: usize = 8;
/// No record is larger; a larger length field means the header itself is damaged.
pub const MAX_RECORD_BYTES: usize = 512 << 20;
/// How many queued commands one group commit takes at most.
const MAX_GROUP_COMMANDS: usize = 8192;

/// How durable an acknowledged write is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync before acknowledging (group commit shares one sync among concurrent writes).
    Always,
    /// Acknowledge after the write reaches the OS; fdatasync at most this often.
    Interval(Duration),
    /// Acknowledge after the write reaches the OS; sync only on rotation and shutdown.
    Never,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log I/O error: {0}")]
    Io(String),
    #[error("write-ahead log queue is full")]
    Backpressure,
    #[error("write-ahead log is closed")]
    Closed,
}

impl From<io::Error> for WalError {
    fn from(e: io::Error) -> Self {
        WalError::Io(e.to_string())
    }
}

type Ack<T> = oneshot::Sender<Result<T, WalError>>;

enum Command {
    Append {
        payload: Vec<u8>,
        ack: Ack<()>,
    },
    /// Close the current file and continue in the next; answers the closed file's sequence.
    Rotate {
        ack: Ack<u64>,
    },
    Shutdown {
        ack: Ack<()>,
    },
}

/// Handle to the WAL writer thread.
pub struct Wal {
    dir: PathBuf,
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    pending_bytes: Arc<AtomicUsize>,
    max_pending_bytes: usize,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Wal {
    /// Starts a writer on a new file with sequence `first_seq` (one past anything replayed, so
    /// old files are never appended to).
    pub fn start(dir: &Path, first_seq: u64, policy: FsyncPolicy, max_pending_bytes: usize) -> Result<Wal, WalError> {
        fs::create_dir_all(dir)?;
        let file = SegmentFile::create(dir, first_seq)?;
        let (sender, receiver) = mpsc::channel();
        let pending_bytes = Arc::new(AtomicUsize::new(0));
        let writer =
            Writer { dir: dir.to_path_buf(), file, policy, pending_bytes: pending_bytes.clone(), dirty_since: None };
        let thread = thread::Builder::new().name("vigil-wal".into()).spawn(move || writer.run(receiver))?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            sender: Mutex::new(Some(sender)),
            pending_bytes,
            max_pending_bytes,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, command: Command) -> Result<(), WalError> {
        let sender = self.sender.lock();
        sender.as_ref().ok_or(WalError::Closed)?.send(command).map_err(|_| WalError::Closed)
    }

    /// Queues a record. The returned receiver resolves once the record is durable under the
    /// policy. Refuses (without queueing) when more than the configured bytes await writing.
    pub fn append(&self, payload: Vec<u8>) -> Result<oneshot::Receiver<Result<(), WalError>>, WalError> {
        let len = payload.len();
        if len > MAX_RECORD_BYTES {
            return Err(WalError::Io(format!("record of {len} bytes exceeds {MAX_RECORD_BYTES}")));
        }
        let pending = self.pending_bytes.fetch_add(len, Ordering::AcqRel);
        if pending > 0 && pending + len > self.max_pending_bytes {
            self.pending_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(WalError::Backpressure);
        }
        let (ack, done) = oneshot::channel();
        if let Err(e) = self.send(Command::Append { payload, ack }) {
            self.pending_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(e);
        }
        Ok(done)
    }

    /// Queues a rotation; resolves to the sequence of the file it closed. Every record queued
    /// before the call is in that file or an earlier one.
    pub fn rotate(&self) -> Result<oneshot::Receiver<Result<u64, WalError>>, WalError> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Rotate { ack })?;
        Ok(done)
    }

    /// Deletes files whose sequence is at most `seq` (their records reached Parquet).
    pub fn remove_through(&self, seq: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        for (file_seq, path) in list_files(&self.dir)? {
            if file_seq <= seq {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Bytes queued but not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Acquire)
    }

    /// Writes and syncs everything queued, then stops the writer thread.
    pub async fn shutdown(&self) -> Result<(), WalError> {
        let (ack, done) = oneshot::channel();
        let sent = self.send(Command::Shutdown { ack });
        self.sender.lock().take();
        if sent.is_ok() {
            done.await.map_err(|_| WalError::Closed)??;
        }
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit.
        self.sender.lock().take();
    }
}

/// The open file and how much of it holds complete records.
struct SegmentFile {
    seq: u64,
    file: File,
    good_len: u64,
}

impl SegmentFile {
    fn create(dir: &Path, seq: u64) -> io::Result<SegmentFile> {
        let path = file_path(dir, seq);
        let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        // Make the new directory entry itself durable.
        File::open(dir)?.sync_all()?;
        Ok(SegmentFile { seq, file, good_len: MAGIC.len() as u64 })
    }
}

struct Writer {
    dir: PathBuf,
    file: SegmentFile,
    policy: FsyncPolicy,
    pending_bytes: Arc<AtomicUsize>,
    /// Set when bytes were written but not yet synced.
    dirty_since: Option<Instant>,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        let mut group: Vec<Command> = Vec::new();
        loop {
            let first = match self.policy {
                FsyncPolicy::Interval(every) if self.dirty_since.is_some() => {
                    let due = self.dirty_since.map(|t| t + every).unwrap_or_else(Instant::now);
                    match receiver.recv_timeout(due.saturating_duration_since(Instant::now())) {
                        Ok(command) => command,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.sync_if_dirty();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match receiver.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
            };
            group.push(first);
            while group.len() < MAX_GROUP_COMMANDS {
                match receiver.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            if self.handle(&mut group) {
                return;
            }
            if let FsyncPolicy::Interval(every) = self.policy
                && self.dirty_since.is_some_and(|t| t.elapsed() >= every)
            {
                self.sync_if_dirty();
            }
        }
        self.sync_if_dirty();
    }

    /// Handles one group; true when the writer must stop.
    fn handle(&mut self, group: &mut Vec<Command>) -> bool {
        let mut appends: Vec<(Vec<u8>, Ack<()>)> = Vec::new();
        for command in group.drain(..) {
            match command {
                Command::Append { payload, ack } => appends.push((payload, ack)),
                Command::Rotate { ack } => {
                    self.commit(&mut appends);
                    let _ = ack.send(self.rotate());
                }
                Command::Shutdown { ack } => {
                    self.commit(&mut appends);
                    let result = self.file.file.sync_data().map_err(WalError::from);
                    self.dirty_since = None;
                    let _ = ack.send(result);
                    return true;
                }
            }
        }
        self.commit(&mut appends);
        false
    }

    /// Writes a group of records with one write (and one sync under `always`), then
    /// acknowledges each.
    fn commit(&mut self, appends: &mut Vec<(Vec<u8>, Ack<()>)>) {
        if appends.is_empty() {
            return;
        }
        let total: usize = appends.iter().map(|(p, _)| p.len() + RECORD_HEADER_BYTES).sum();
        let mut buffer = Vec::with_capacity(total);
        for (payload, _) in appends.iter() {
            buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
            buffer.extend_from_slice(payload);
        }
        let mut result = self.file.file.write_all(&buffer);
        if result.is_ok() {
            if self.policy == FsyncPolicy::Always {
                result = self.file.file.sync_data();
            } else if self.dirty_since.is_none() {
                self.dirty_since = Some(Instant::now());
            }
        }
        let outcome = match result {
            Ok(()) => {
                self.file.good_len += buffer.len() as u64;
                metrics::counter!("vigil_wal_bytes_written_total").increment(buffer.len() as u64);
                metrics::counter!("vigil_wal_group_commits_total").increment(1);
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "WAL write failed; the writes of this group are refused");
                self.recover_after_failed_write();
                Err(WalError::from(e))
            }
        };
        let payload_bytes = total - appends.len() * RECORD_HEADER_BYTES;
        self.pending_bytes.fetch_sub(payload_bytes, Ordering::AcqRel);
        for (_, ack) in appends.drain(..) {
            let _ = ack.send(outcome.clone());
        }
    }

    /// A failed write may have left part of a record behind; later records must not follow
    /// garbage. Cut the file back to its last complete record, or move on to a new file.
    fn recover_after_failed_write(&mut self) {
        let good_len = self.file.good_len;
        let cut =
            self.file.file.set_len(good_len).and_then(|_| self.file.file.seek(SeekFrom::Start(good_len)).map(|_| ()));
        if cut.is_err() {
            match SegmentFile::create(&self.dir, self.file.seq + 1) {
                Ok(file) => self.file = file,
                Err(e) => warn!(error = %e, "cannot open a new WAL file"),
            }
        }
    }

    fn rotate(&mut self) -> Result<u64, WalError> {
        self.file.file.sync_data()?;
        self.dirty_since = None;
        let closed = self.file.seq;
        self.file = SegmentFile::create(&self.dir, closed + 1)?;
        Ok(closed)
    }

    fn sync_if_dirty(&mut self) {
        if self.dirty_since.take().is_some()
            && let Err(e) = self.file.file.sync_data()
        {
            warn!(error = %e, "WAL fdatasync failed");
        }
    }
}

fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// WAL files in `dir`, by sequence.
pub fn list_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push((seq, path));
        }
    }
    files.sort();
    Ok(files)
}

/// What a replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub files: usize,
    pub records: usize,
    /// Files whose tail was cut off (torn or corrupt).
    pub damaged_files: usize,
    /// Highest file sequence seen (0 when there were none).
    pub last_seq: u64,
}

/// Reads every record of files with sequence above `after_seq`, in order, and hands each
/// payload to `apply`. A short or corrupt record ends its file with a warning.
pub fn replay(dir: &Path, after_seq: u64, mut apply: impl FnMut(u64, &[u8])) -> io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    for (seq, path) in list_files(dir)? {
        stats.last_seq = stats.last_seq.max(seq);
        if seq <= after_seq {
            continue;
        }
        stats.files += 1;
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&path)?);
        let mut magic = [0u8; 8];
        if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
            warn!(file = %path.display(), "WAL file without a valid header; skipped");
            stats.damaged_files += 1;
            continue;
        }
        let mut offset = MAGIC.len() as u64;
        loop {
            let mut header = [0u8; RECORD_HEADER_BYTES];
            match read_full(&mut reader, &mut header)? {
                0 => break,
                n if n < RECORD_HEADER_BYTES => {
                    warn!(file = %path.display(), offset, "torn WAL record header; tail cut off");
                    stats.damaged_files += 1;
                    break;
                }
                _ => {}
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len > MAX_RECORD_BYTES {
                warn!(file = %path.display(), offset, len, "implausible WAL record length; tail cut off");
                stats.damaged_files += 1;
                break;
            }
            let mut payload = vec![0u8; len];
            if read_full(&mut reader, &mut payload)? < len {
                warn!(file = %path.display(), offset, "torn WAL record; tail cut off");
                stats.damaged_files += 1;
                break;
            }
            if crc32c::crc32c(&payload) != crc {
                warn!(file = %path.display(), offset, "WAL record fails its CRC; tail cut off");
                stats.damaged_files += 1;
                break;
            }
            apply(seq, &payload);
            stats.records += 1;
            offset += (RECORD_HEADER_BYTES + len) as u64;
        }
    }
    if stats.files > 0 {
        info!(files = stats.files, records = stats.records, damaged = stats.damaged_files, "WAL replayed");
    }
    Ok(stats)
}

/// Like `read_exact` but reports how much was read instead of failing at end of file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests;
