//! The local directory store, reading what the page cache holds on the calling thread.
//!
//! `object_store`'s `LocalFileSystem` runs every read on tokio's blocking pool, as a read may
//! wait for the disk. A query reads a few ranges of each segment it opens (its footer is
//! cached), nearly always from the page cache, and handing each read to a pool thread and
//! back (waking it, switching to it and back) was a sixth of the time of a 7 d query over a
//! few series (84 segments). Here a read asks the kernel not to wait (`preadv2` with
//! `RWF_NOWAIT`): a range held in the page cache is copied at once, and only one that would
//! wait for the disk goes to the pool as before. The files read so are kept open (a few
//! hundred, oldest closed first): a query opens every segment its time range covers, and
//! opening and closing each (a path walk and a file table entry) was 2.5-3.4 % of a 7 d query
//! over 84 segments. Everything else is `LocalFileSystem`'s.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use parking_lot::Mutex;

/// A local directory: `LocalFileSystem`, whose range reads of cached pages do not wait for a
/// blocking thread.
#[derive(Debug)]
pub struct LocalStore {
    files: Arc<LocalFileSystem>,
    open: Arc<OpenFiles>,
}

/// Files kept open for range reads, oldest closed first past [`OPEN_FILES`]. Segments are
/// written once and never rewritten under their name, and a location this store writes
/// whole, renames, copies over or deletes is closed before and after, so a kept file is the
/// one at its path.
/// (A file another process deletes stays readable, and its space taken, until it is closed
/// here: at most [`OPEN_FILES`] of them.)
#[derive(Debug, Default)]
struct OpenFiles {
    files: Mutex<OpenFilesInner>,
}

#[derive(Debug, Default)]
struct OpenFilesInner {
    by_path: HashMap<Path, Arc<File>>,
    order: VecDeque<Path>,
}

/// Files kept open at most: a 7 d query over 2 h partitions reads 84 segments (more with
/// several scales or tables of their own), well within the process's file limit, which
/// `vigil` raises at start.
const OPEN_FILES: usize = 256;

impl OpenFiles {
    /// The file at `location` (`path` on disk), kept open or opened now.
    fn get(&self, location: &Path, path: &std::path::Path) -> Option<Arc<File>> {
        if let Some(file) = self.files.lock().by_path.get(location) {
            return Some(file.clone());
        }
        let file = Arc::new(File::open(path).ok()?);
        let mut open = self.files.lock();
        if let Some(kept) = open.by_path.get(location) {
            return Some(kept.clone());
        }
        open.by_path.insert(location.clone(), file.clone());
        open.order.push_back(location.clone());
        while open.order.len() > OPEN_FILES {
            if let Some(oldest) = open.order.pop_front() {
                open.by_path.remove(&oldest);
            }
        }
        Some(file)
    }

    /// Runs `change` of `locations` with their files closed before it and again after it (a
    /// read in between would have kept the file it replaces).
    async fn closed_around<T>(&self, locations: &[&Path], change: impl std::future::Future<Output = T>) -> T {
        locations.iter().for_each(|location| self.forget(location));
        let changed = change.await;
        locations.iter().for_each(|location| self.forget(location));
        changed
    }

    /// Closes the file at `location`, about to change or go.
    fn forget(&self, location: &Path) {
        let mut open = self.files.lock();
        if open.by_path.remove(location).is_some() {
            open.order.retain(|kept| kept != location);
        }
    }

    #[cfg(test)]
    fn holds(&self, location: &Path) -> bool {
        self.files.lock().by_path.contains_key(location)
    }
}

impl LocalStore {
    pub fn new(files: LocalFileSystem) -> Self {
        LocalStore { files: Arc::new(files), open: Arc::default() }
    }

    /// `ranges` of the object at `location` if the page cache holds all of them; `None` when
    /// any would wait for the disk, or cannot be read here (the blocking read then answers,
    /// with its own errors).
    fn read_cached(&self, location: &Path, ranges: &[Range<u64>]) -> Option<Vec<Bytes>> {
        let path = self.files.path_to_filesystem(location).ok()?;
        let file = self.open.get(location, &path)?;
        ranges.iter().map(|range| read_without_waiting(&file, range)).collect()
    }
}

/// `range` of `file`, or `None` when reading it would wait for the disk (or fails, or ends
/// early: the blocking read reports those).
#[cfg(target_os = "linux")]
fn read_without_waiting(file: &File, range: &Range<u64>) -> Option<Bytes> {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    let len = usize::try_from(range.end.checked_sub(range.start)?).ok()?;
    let mut bytes = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let buffers = &mut [std::io::IoSliceMut::new(&mut bytes[done..])];
        match preadv2(file, buffers, range.start + done as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) => return None,
            Ok(read) => done += read,
            Err(Errno::INTR) => {}
            // EAGAIN: pages not cached; EOPNOTSUPP: a file system without RWF_NOWAIT.
            Err(_) => return None,
        }
    }
    Some(Bytes::from(bytes))
}

#[cfg(not(target_os = "linux"))]
fn read_without_waiting(_: &File, _: &Range<u64>) -> Option<Bytes> {
    None
}

impl std::fmt::Display for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.files, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match self.read_cached(location, ranges) {
            Some(read) => Ok(read),
            None => self.files.get_ranges(location, ranges).await,
        }
    }

    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.open.closed_around(&[location], self.files.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        // Closed before only: the object appears when the upload completes, later. Vigil
        // writes no segment in parts; a location it reads is written whole by `put_opts`.
        self.open.forget(location);
        self.files.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.files.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        // Closed before each is deleted, and again once it is (a read in between kept it).
        let (before, after) = (self.open.clone(), self.open.clone());
        let forget = |open: Arc<OpenFiles>| {
            move |location: &Result<Path>| {
                if let Ok(location) = location {
                    open.forget(location);
                }
            }
        };
        self.files.delete_stream(locations.inspect(forget(before)).boxed()).inspect(forget(after)).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.files.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.files.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.files.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.open.closed_around(&[to], self.files.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.open.closed_around(&[from, to], self.files.rename_opts(from, to, options)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn ranges_read_here_are_the_files_bytes_and_misses_are_the_stores_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let location = Path::from("a/b.parquet");
        store.put(&location, PutPayload::from(data.clone())).await.unwrap();
        let ranges = [0..10, 99_990..100_000, 4096..70_000, 5..5];
        // Just written, so cached: read on this thread, and equal to the blocking reads.
        let here = store.read_cached(&location, &ranges).expect("cached pages read without waiting");
        let blocking = store.files.get_ranges(&location, &ranges).await.unwrap();
        assert_eq!(here, blocking);
        for (range, bytes) in ranges.iter().zip(&here) {
            assert_eq!(bytes.as_ref(), &data[range.start as usize..range.end as usize]);
        }
        assert_eq!(store.get_ranges(&location, &ranges).await.unwrap(), blocking);
        let (past_end, first_byte) = ([99_990..100_010, 0..1], [0..1, 0..1]);
        // Past the end and a missing object: not read here; the store's own errors answer.
        assert!(store.read_cached(&location, &past_end).is_none());
        assert!(store.get_ranges(&location, &past_end).await.is_err());
        let missing = Path::from("a/none.parquet");
        assert!(store.read_cached(&missing, &first_byte).is_none());
        assert!(matches!(store.get_ranges(&missing, &first_byte).await, Err(object_store::Error::NotFound { .. })));
        // Everything else is the directory's, and so is its name.
        assert_eq!(store.to_string(), store.files.to_string());
        assert_eq!(store.head(&location).await.unwrap().size, 100_000);
        assert_eq!(store.get(&location).await.unwrap().bytes().await.unwrap().len(), 100_000);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn files_kept_open_are_closed_when_their_location_changes_and_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let (a, b) = (Path::from("s/a.parquet"), Path::from("s/b.parquet"));
        let first_four = 0..4;
        let first_four = std::slice::from_ref(&first_four);
        let read = |location: &Path| store.read_cached(location, first_four).map(|mut read| read.remove(0));
        store.put(&a, PutPayload::from_static(b"aaaa")).await.unwrap();
        assert_eq!(read(&a).unwrap().as_ref(), b"aaaa");
        assert!(store.open.holds(&a), "a file read is kept open");

        // Written again, renamed over, deleted: each read sees the file at the path now.
        store.put(&a, PutPayload::from_static(b"AAAA")).await.unwrap();
        assert!(!store.open.holds(&a));
        assert_eq!(read(&a).unwrap().as_ref(), b"AAAA");
        store.put(&b, PutPayload::from_static(b"bbbb")).await.unwrap();
        assert_eq!(read(&b).unwrap().as_ref(), b"bbbb");
        store.rename(&b, &a).await.unwrap();
        assert!(!store.open.holds(&a) && !store.open.holds(&b));
        assert_eq!(read(&a).unwrap().as_ref(), b"bbbb");
        assert!(read(&b).is_none(), "the old name is gone");
        store.put(&b, PutPayload::from_static(b"cccc")).await.unwrap();
        assert_eq!(read(&b).unwrap().as_ref(), b"cccc");
        store.copy(&b, &a).await.unwrap();
        assert_eq!(read(&a).unwrap().as_ref(), b"cccc");
        store.delete(&a).await.unwrap();
        assert!(!store.open.holds(&a));
        assert!(read(&a).is_none(), "a deleted file is not read from a kept descriptor");
        assert!(matches!(store.get_ranges(&a, first_four).await, Err(object_store::Error::NotFound { .. })));

        // Past the bound the oldest are closed; the newest stay.
        let many: Vec<Path> = (0..OPEN_FILES + 10).map(|i| Path::from(format!("m/{i}.parquet"))).collect();
        for (i, location) in many.iter().enumerate() {
            store.put(location, PutPayload::from(format!("{i:04}").into_bytes())).await.unwrap();
            assert_eq!(read(location).unwrap().as_ref(), format!("{i:04}").as_bytes());
        }
        let held = many.iter().filter(|location| store.open.holds(location)).count();
        assert_eq!(held, OPEN_FILES);
        assert!(!store.open.holds(&many[0]) && store.open.holds(&many[OPEN_FILES + 9]));
        assert!(!store.open.holds(&b), "b, read before them, was closed first");
    }
}
