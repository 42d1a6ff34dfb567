//! The Docker engine (`docker-daemon:NAME[:TAG]`, on the engine the context names).
//! As a sink, the image is streamed to the engine's load endpoint as a
//! docker-archive, then checked by asking the engine for the image ID, which
//! must equal the config digest. As a source, the engine's export (`docker
//! save`) is streamed to a temporary file and read as a docker-archive, in
//! either format (Engines before 25 write no OCI layout).

use std::time::Duration;

use super::Sink;
use super::engine::Engine;
use crate::image::{AnyImage, Image};
use crate::reference::DockerName;
use crate::{Error, Result};

/// Loads images into an engine.
pub struct DaemonSink {
    engine: Engine,
    name: DockerName,
}

impl DaemonSink {
    /// A sink that loads the image into `engine` as `name`.
    pub fn new(engine: Engine, name: DockerName) -> Self {
        DaemonSink { engine, name }
    }
}

/// Connects to the engine, with a timeout long enough for big loads.
pub fn connect(engine: &Engine) -> Result<bollard::Docker> {
    Ok(super::engine::connect(engine, 120)?.with_timeout(Duration::from_secs(3600)))
}

/// `PID-NANOS`: names kiln's containers and networks apart (never reaches an output).
pub fn name_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n:08x}", std::process::id())
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            context: "starting the async runtime".into(),
            source: e,
        })
}

/// Reads `name` from the engine: its export, streamed to a temporary file
/// (bounded memory), read through the one read path.
pub fn export(engine: &Engine, name: &DockerName, platform: Option<&crate::oci::Platform>) -> Result<Image> {
    use futures_util::StreamExt;
    use std::io::Write;
    let tmp = tempfile::Builder::new()
        .prefix("kiln-export-")
        .tempfile()
        .map_err(|e| Error::Io {
            context: "creating a temporary file for the engine's export".into(),
            source: e,
        })?;
    let (file, path) = tmp.into_parts();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let rt = runtime()?;
    rt.block_on(async {
        let docker = connect(engine)?;
        docker
            .inspect_image(&name.to_string())
            .await
            .map_err(|e| Error::NotFound {
                what: format!("image {name}"),
                location: "the Docker engine".into(),
                hint: format!(" ({e}); `docker images` lists what it has"),
            })?;
        let mut s = docker.export_image(&name.to_string());
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| Error::Engine {
                message: format!("exporting {name}: {e}"),
            })?;
            out.write_all(&chunk).map_err(Error::write(&path))?;
        }
        out.flush().map_err(Error::write(&path))
    })?;
    drop(out);
    super::archive::read_temporary(path, Some(name), platform)
}

impl Sink for DaemonSink {
    /// An engine holds one platform per name: from an index, the image for
    /// this machine's platform is loaded (as `docker pull` would).
    fn put_any(&self, what: &crate::image::AnyImage) -> Result<()> {
        self.put(what.for_single_platform_output(&format!("docker-daemon:{}", self.name))?)
    }

    fn put(&self, image: &Image) -> Result<()> {
        use futures_util::StreamExt;
        // The archive is produced on a thread and streamed through a pipe of
        // bounded chunks: no temp file, bounded memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
        // The engine takes one platform: only that image is streamed.
        let img = AnyImage::Image(image.clone());
        let name = self.name.clone();
        let location = format!("docker-daemon:{name}");
        let producer = std::thread::spawn(move || {
            let w = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(1 << 20),
            };
            match super::archive::write_archive(&img, Some(&name), &location, w) {
                Ok(mut w) => {
                    let _ = w.send_buf();
                    Ok(())
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    Err(e)
                }
            }
        });
        let rt = runtime()?;
        let loaded: Result<()> = rt.block_on(async {
            let docker = connect(&self.engine)?;
            crate::store::engine::ping(&docker, &self.engine).await?;
            let stream =
                futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
            let body = bollard::body_try_stream(stream);
            let opts = bollard::query_parameters::ImportImageOptionsBuilder::default()
                .quiet(true)
                .build();
            let mut results = docker.import_image(opts, body, None);
            while let Some(r) = results.next().await {
                r.map_err(|e| Error::Engine {
                    message: format!("loading the image failed: {e}"),
                })?;
            }
            let inspect = docker
                .inspect_image(&self.name.to_string())
                .await
                .map_err(|e| Error::Engine {
                    message: format!("the engine did not keep {} after loading it: {e}", self.name),
                })?;
            let id = inspect.id.unwrap_or_default();
            let want = image.manifest().config.digest.to_string();
            if id != want {
                return Err(Error::Engine {
                    message: format!("{} has image ID {id} after loading, expected {want}", self.name),
                });
            }
            Ok(())
        });
        let produced = producer.join().map_err(|_| Error::Engine {
            message: "archive writer panicked".into(),
        })?;
        produced?;
        loaded
    }
}

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(1 << 20)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 20 {
            self.send_buf()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
