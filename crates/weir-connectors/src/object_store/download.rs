//! Local copies of remote objects that readers read while the download is still arriving, so parsing overlaps
//! the transfer instead of waiting for it. A reader that gets ahead of the download waits for the bytes it asks
//! for; one that reads past the end of a failed download gets the download's error.
//!
//! Downloads in flight are registered by local path, and [`open`] and [`size`] answer for them: the file readers
//! (`files::open`, the CSV reader's chunked reads) go through these two functions and need not know whether a file
//! is complete. A finished download leaves the registry; its file is then an ordinary file. A download whose file
//! is gone (its run ended and took the scratch directory with it) stops at the next MiB.

use std::collections::HashMap;
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::Duration;

use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use super::remote::next_piece;

/// How much arrives between wake-ups of waiting readers.
const NOTIFY_BYTES: u64 = 1 << 20;

static IN_FLIGHT: LazyLock<Mutex<HashMap<PathBuf, Arc<Download>>>> = LazyLock::new(Default::default);

/// A file being written by a download.
struct Download {
    /// The object's size, known before the first byte arrives.
    size: u64,
    progress: Mutex<Progress>,
    arrived: Condvar,
}

#[derive(Default)]
struct Progress {
    written: u64,
    /// Why the download stopped short.
    failed: Option<String>,
}

impl Download {
    /// Waits until the file holds byte `at` (or the download ended); returns how many bytes it holds from `at`.
    fn available(&self, at: u64) -> std::io::Result<u64> {
        let mut progress = self.progress.lock().expect("download progress lock");
        loop {
            if progress.written > at || progress.written == self.size {
                return Ok(progress.written.saturating_sub(at));
            }
            if let Some(why) = &progress.failed {
                return Err(std::io::Error::other(why.clone()));
            }
            progress = self.arrived.wait(progress).expect("download progress lock");
        }
    }

    fn advance(&self, bytes: u64) {
        self.progress.lock().expect("download progress lock").written += bytes;
        self.arrived.notify_all();
    }

    fn fail(&self, why: String) {
        self.progress.lock().expect("download progress lock").failed = Some(why);
        self.arrived.notify_all();
    }
}

/// Starts downloading `key` (of `size` bytes) into `local`, which exists when this returns; readers may open it
/// at once. `url` names the object in errors; the download fails once no bytes have come for `idle`.
pub fn begin(
    store: Arc<dyn ObjectStore>,
    key: Key,
    size: u64,
    local: &Path,
    url: String,
    idle: Duration,
) -> std::io::Result<()> {
    if let Some(parent) = local.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Network chunks are a few KiB: they are gathered (not copied) into one write per MiB, after which readers are
    // woken.
    let mut file = std::fs::File::create(local)?;
    let download = Arc::new(Download { size, progress: Mutex::default(), arrived: Condvar::new() });
    IN_FLIGHT.lock().expect("downloads lock").insert(local.to_path_buf(), download.clone());
    let (local, runtime) = (local.to_path_buf(), tokio::runtime::Handle::current());
    // A thread of its own: each chunk is written with a plain blocking write, and the reader's wait must not hold
    // up the runtime this download needs.
    tokio::task::spawn_blocking(move || {
        let copied = runtime.block_on(async {
            let failed = |e: &dyn std::fmt::Display| Stop::Failed(e.to_string());
            let mut body = store.get(&key).await.map_err(|e| failed(&e))?.into_stream();
            let (mut written, mut told) = (0u64, 0u64);
            let mut gathered = Vec::new();
            while let Some(chunk) = next_piece(&mut body, idle).await {
                let chunk = chunk.map_err(Stop::Failed)?;
                written += chunk.len() as u64;
                gathered.push(chunk);
                if written - told >= NOTIFY_BYTES || written == size {
                    write_chunks(&mut file, &gathered).map_err(|e| failed(&e))?;
                    gathered.clear();
                    download.advance(written - told);
                    told = written;
                    // The run's scratch directory goes when the run ends: nobody will read the rest.
                    if !local.exists() {
                        return Err(Stop::Abandoned);
                    }
                }
            }
            write_chunks(&mut file, &gathered).map_err(|e| failed(&e))?;
            download.advance(written - told);
            match written == size {
                true => Ok(()),
                false => Err(Stop::Failed(format!(
                    "the object changed while it was read: {written} bytes arrived, {size} were listed"
                ))),
            }
        });
        match copied {
            Ok(()) => {
                IN_FLIGHT.lock().expect("downloads lock").remove(&local);
            }
            Err(Stop::Abandoned) => {
                download.fail(format!("the download of {url} stopped: its run ended"));
                IN_FLIGHT.lock().expect("downloads lock").remove(&local);
            }
            Err(Stop::Failed(why)) => download.fail(format!("cannot download {url}: {why}")),
        }
    });
    Ok(())
}

/// Writes `chunks` in order with as few system calls as the kernel allows.
fn write_chunks(file: &mut std::fs::File, chunks: &[bytes::Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => IoSlice::advance_slices(&mut rest, n),
        }
    }
    Ok(())
}

/// Why a download ended early.
enum Stop {
    Failed(String),
    /// Its file was removed with the run's scratch directory.
    Abandoned,
}

fn in_flight(path: &Path) -> Option<Arc<Download>> {
    IN_FLIGHT.lock().expect("downloads lock").get(path).cloned()
}

/// A reader that can seek.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// Opens `path` for reading, waiting for its bytes where a download is still writing it.
pub fn open(path: &Path) -> std::io::Result<Box<dyn ReadSeek>> {
    let file = std::fs::File::open(path)?;
    Ok(match in_flight(path) {
        Some(download) => Box::new(ArrivingFile { file, at: 0, download }),
        None => Box::new(file),
    })
}

/// The size `path` has, or will have once its download ends.
pub fn size(path: &Path) -> std::io::Result<u64> {
    match in_flight(path) {
        Some(download) => Ok(download.size),
        None => Ok(std::fs::metadata(path)?.len()),
    }
}

struct ArrivingFile {
    file: std::fs::File,
    at: u64,
    download: Arc<Download>,
}

impl Read for ArrivingFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.download.available(self.at)?;
        let wanted = buf.len().min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..wanted])?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for ArrivingFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::Current(delta) => self.at.checked_add_signed(delta),
            SeekFrom::End(delta) => self.download.size.checked_add_signed(delta),
        };
        let at = at.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start of the file")
        })?;
        self.at = self.file.seek(SeekFrom::Start(at))?;
        Ok(self.at)
    }
}

#[cfg(test)]
mod tests {
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_get_every_byte_of_a_download_in_flight() {
        let store = Arc::new(InMemory::new());
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        store.put(&Key::from("big.csv"), PutPayload::from(data.clone())).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("big.csv");
        begin(store, Key::from("big.csv"), data.len() as u64, &local, "mem://big.csv".into(), Duration::from_secs(30))
            .unwrap();
        let read = tokio::task::spawn_blocking(move || {
            assert_eq!(size(&local).unwrap(), 3_000_000);
            let mut tail = open(&local).unwrap();
            tail.seek(SeekFrom::Start(2_999_000)).unwrap();
            let mut end = Vec::new();
            tail.read_to_end(&mut end).unwrap();
            let mut all = Vec::new();
            open(&local).unwrap().read_to_end(&mut all).unwrap();
            (end, all)
        });
        let (end, all) = read.await.unwrap();
        assert_eq!(end, data[2_999_000..]);
        assert_eq!(all, data);
    }

    #[test]
    fn a_reader_ahead_of_the_download_waits_for_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.csv");
        let mut writer = std::fs::File::create(&path).unwrap();
        let download = Arc::new(Download { size: 12, progress: Mutex::default(), arrived: Condvar::new() });
        let mut reader = ArrivingFile { file: std::fs::File::open(&path).unwrap(), at: 0, download: download.clone() };
        let feeder = std::thread::spawn(move || {
            for piece in [&b"id,na"[..], b"me\n1,", b"a\n"] {
                std::thread::sleep(std::time::Duration::from_millis(30));
                writer.write_all(piece).unwrap();
                download.advance(piece.len() as u64);
            }
        });
        reader.seek(SeekFrom::Start(6)).unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        feeder.join().unwrap();
        assert_eq!(text, "e\n1,a\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_download_whose_run_ended_stops() {
        use object_store::throttle::{ThrottleConfig, ThrottledStore};
        let memory = InMemory::new();
        memory.put(&Key::from("big.csv"), PutPayload::from(vec![b'x'; 3 << 20])).await.unwrap();
        let config = ThrottleConfig { wait_get_per_call: std::time::Duration::from_millis(300), ..Default::default() };
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("run/big.csv");
        begin(
            Arc::new(ThrottledStore::new(memory, config)),
            Key::from("big.csv"),
            3 << 20,
            &local,
            "mem://big.csv".into(),
            Duration::from_secs(30),
        )
        .unwrap();
        let download = in_flight(&local).expect("registered while in flight");
        std::fs::remove_dir_all(dir.path().join("run")).unwrap();
        for _ in 0..50 {
            if in_flight(&local).is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(in_flight(&local).is_none(), "the registry lets go of it");
        let failed = download.progress.lock().unwrap().failed.clone();
        assert_eq!(failed.as_deref(), Some("the download of mem://big.csv stopped: its run ended"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_download_is_a_read_error() {
        let store = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("gone.csv");
        begin(store, Key::from("gone.csv"), 10, &local, "mem://gone.csv".into(), Duration::from_secs(30)).unwrap();
        let err = tokio::task::spawn_blocking(move || open(&local).unwrap().read_to_end(&mut Vec::new()).unwrap_err())
            .await
            .unwrap();
        assert!(err.to_string().starts_with("cannot download mem://gone.csv: "), "{err}");
    }
}
