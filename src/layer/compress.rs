//! Layer compression. gzip is produced pigz-style: the tar stream is cut into
//! fixed 128 KiB blocks, each deflated on its own thread with the previous
//! 32 KiB as dictionary and ended with a sync flush, then concatenated in
//! order. The bytes depend only on the input, the block size and the level —
//! not on the number of threads or on how the caller chunks its writes — so
//! both cores work and the output stays reproducible.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression as Level, FlushCompress, Status};

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip at a fixed level (default 6), parallel and deterministic.
    Gzip { level: u32 },
    /// zstd at a fixed level, single-threaded (multi-threaded output differs).
    Zstd { level: i32 },
    /// Plain tar: the blob digest equals the diff_id.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    /// Parses `gzip`, `gzip:N`, `zstd`, `zstd:N`, `none`.
    pub fn parse(s: &str) -> crate::Result<Self> {
        let bad = |r: &str| crate::Error::invalid("compression", s, r.to_string());
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        match name {
            "gzip" => {
                let level = level
                    .map(|l| l.parse::<u32>())
                    .transpose()
                    .map_err(|_| bad("gzip level is 1..9"))?;
                let level = level.unwrap_or(6);
                if !(1..=9).contains(&level) {
                    return Err(bad("gzip level is 1..9"));
                }
                Ok(Compression::Gzip { level })
            }
            "zstd" => {
                let level = level
                    .map(|l| l.parse::<i32>())
                    .transpose()
                    .map_err(|_| bad("zstd level is 1..19"))?;
                let level = level.unwrap_or(3);
                if !(1..=19).contains(&level) {
                    return Err(bad("zstd level is 1..19"));
                }
                Ok(Compression::Zstd { level })
            }
            "none" if level.is_none() => Ok(Compression::None),
            _ => Err(bad("expected gzip[:LEVEL], zstd[:LEVEL] or none")),
        }
    }

    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip { .. } => crate::oci::MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd { .. } => crate::oci::MEDIA_TYPE_LAYER_ZSTD,
            Compression::None => crate::oci::MEDIA_TYPE_LAYER_TAR,
        }
    }
}

/// Uncompressed bytes per gzip block (pigz's default).
pub const GZIP_BLOCK: usize = 128 * 1024;
const DICT: usize = 32 * 1024;

/// A writer that compresses into `W` with the chosen [`Compression`].
pub enum Compressor<W: Write + Send + 'static> {
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// Starts compressing into `out`.
    pub fn new(out: W, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip { level } => Compressor::Gzip(ParallelGzip::new(out, level, default_threads())?),
            Compression::Zstd { level } => Compressor::Zstd(zstd::stream::write::Encoder::new(out, level)?),
            Compression::None => Compressor::None(out),
        })
    }

    /// Flushes everything and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
            Compressor::None(w) => Ok(w),
        }
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

fn default_threads() -> usize {
    std::env::var("KILN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

type JobResult = (u64, io::Result<Vec<u8>>);

/// pigz-style parallel gzip writer (see the module docs).
pub struct ParallelGzip<W: Write> {
    out: Option<W>,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    sent: u64,
    written: u64,
    max_in_flight: u64,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<JobResult>,
    pending: BTreeMap<u64, Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParallelGzip<W> {
    /// Starts a gzip stream into `out` with `threads` compressing workers.
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        // gzip header: no mtime, no name, XFL 0, OS 255 (unknown): host-free.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        let threads = threads.max(1);
        let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
        let (res_tx, res_rx) = sync_channel::<JobResult>(threads * 4);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = res_tx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock().expect("job queue lock").recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                        let r = deflate_block(&job.dict, &job.data, level, job.last);
                        if tx.send((job.seq, r)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Ok(ParallelGzip {
            out: Some(out),
            buf: Vec::with_capacity(GZIP_BLOCK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            sent: 0,
            written: 0,
            max_in_flight: (threads * 3) as u64,
            jobs: Some(job_tx),
            results: res_rx,
            pending: BTreeMap::new(),
            workers,
        })
    }

    fn send_block(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(GZIP_BLOCK));
        let next_dict = if data.len() >= DICT {
            data[data.len() - DICT..].to_vec()
        } else {
            let mut d = std::mem::take(&mut self.dict);
            d.extend_from_slice(&data);
            let cut = d.len().saturating_sub(DICT);
            d.drain(..cut);
            d
        };
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let job = Job {
            seq: self.sent,
            dict,
            data,
            last,
        };
        self.sent += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip writer failed earlier"))?
            .send(job)
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        // Keep memory bounded: wait while too many blocks are in flight.
        while self.sent - self.written > self.max_in_flight {
            self.collect_one()?;
        }
        while let Ok((seq, r)) = self.results.try_recv() {
            self.pending.insert(seq, r?);
            self.drain_ready()?;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, r) = self
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.pending.insert(seq, r?);
        self.drain_ready()
    }

    fn drain_ready(&mut self) -> io::Result<()> {
        while let Some(block) = self.pending.remove(&self.written) {
            self.out
                .as_mut()
                .expect("writer present until finish")
                .write_all(&block)?;
            self.written += 1;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_block(true)?;
        self.jobs = None;
        while self.written < self.sent {
            self.collect_one()?;
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        let mut out = self.out.take().expect("writer present until finish");
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&(self.total as u32).to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        self.crc.update(buf);
        self.total += n as u64;
        while !buf.is_empty() {
            let take = (GZIP_BLOCK - self.buf.len()).min(buf.len());
            self.buf.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.buf.len() == GZIP_BLOCK {
                self.send_block(false)?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Close the job queue so idle workers exit; drain results so none blocks.
        self.jobs = None;
        while self.results.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            // A worker blocked on a full result queue is freed by draining it.
            while !w.is_finished() {
                let _ = self.results.recv_timeout(std::time::Duration::from_millis(5));
            }
            let _ = w.join();
        }
    }
}

/// Raw-deflates one block with `dict` as the preset dictionary. Non-final
/// blocks end with a sync flush (byte-aligned, empty stored block) so the
/// next block's bits can simply follow.
fn deflate_block(dict: &[u8], data: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    // A fresh compressor per block: reusing one after reset is a documented trap.
    let mut c = Compress::new(Level::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == data.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => break,
            _ if !last && done_input && room_left => break,
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial: a text-like stream with a counter.
        let mut v = Vec::with_capacity(n);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(format!("line {i} of kiln's test data {}\n", i * 7919 % 1000).as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn gz(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), 6, threads).unwrap();
        for c in data.chunks(chunk.max(1)) {
            g.write_all(c).unwrap();
        }
        g.finish().unwrap()
    }

    #[test]
    fn decompresses_with_an_independent_decoder() {
        for n in [0, 1, 1000, GZIP_BLOCK, GZIP_BLOCK + 1, 5 * GZIP_BLOCK + 77] {
            let data = sample(n);
            let out = gz(&data, 2, 4096);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "size {n}");
        }
    }

    #[test]
    fn bytes_do_not_depend_on_threads_or_write_sizes() {
        let data = sample(3 * GZIP_BLOCK + 12345);
        let a = gz(&data, 1, 1);
        let b = gz(&data, 4, 65536);
        let c = gz(&data, 2, 7919);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn header_carries_no_host_data() {
        let out = gz(b"x", 1, 1);
        assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    }

    #[test]
    fn parses_compression_names() {
        assert_eq!(Compression::parse("gzip").unwrap(), Compression::Gzip { level: 6 });
        assert_eq!(Compression::parse("gzip:9").unwrap(), Compression::Gzip { level: 9 });
        assert_eq!(Compression::parse("zstd").unwrap(), Compression::Zstd { level: 3 });
        assert_eq!(Compression::parse("none").unwrap(), Compression::None);
        assert!(Compression::parse("gzip:0").is_err());
        assert!(Compression::parse("brotli").is_err());
    }
}
