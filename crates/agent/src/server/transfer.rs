//! File and tar transfers: uploads in progress by request id, and downloads on their own threads.

use super::wire::{send, send_error, Sink};
use firerunner_agent_proto::message::{Body, MAX_CHUNK};
use firerunner_agent_proto::tar;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// The uploads of one connection under way, by request id.
pub(super) struct Uploads {
    sink: Sink,
    files: HashMap<u32, File>,
    tars: HashMap<u32, SyncSender<Option<Vec<u8>>>>,
}

impl Uploads {
    pub(super) fn new(sink: Sink) -> Self {
        Uploads {
            sink,
            files: HashMap::new(),
            tars: HashMap::new(),
        }
    }

    /// Serves a `PutFile`, `PutTar`, `GetFile`, `GetTar`, or an upload's `Data` or `End`.
    pub(super) fn handle(&mut self, id: u32, body: Body) {
        match body {
            Body::PutFile { path, mode } => self.put_file(id, &path, mode),
            Body::PutTar { path } => self.put_tar(id, path),
            Body::GetFile { path } => {
                let sink = self.sink.clone();
                std::thread::spawn(move || send_file(&sink, id, &path));
            }
            Body::GetTar { path } => {
                let sink = self.sink.clone();
                std::thread::spawn(move || send_tar(&sink, id, &path));
            }
            Body::Data(data) => self.data(id, data),
            Body::End => self.end(id),
            _ => {}
        }
    }

    fn put_file(&mut self, id: u32, path: &str, mode: u32) {
        let opened = File::create(path).and_then(|f| {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            Ok(f)
        });
        match opened {
            Ok(file) => {
                self.files.insert(id, file);
            }
            Err(err) => send_error(&self.sink, id, &err),
        }
    }

    fn put_tar(&mut self, id: u32, path: String) {
        let (tx, rx) = sync_channel::<Option<Vec<u8>>>(16);
        self.tars.insert(id, tx);
        let sink = self.sink.clone();
        std::thread::spawn(move || {
            let mut input = ChunkReader {
                rx,
                current: Vec::new(),
                offset: 0,
            };
            let options = tar::UnpackOptions::replacing(tar::Limits::default());
            let result = tar::unpack(&mut input, Path::new(&path), &options)
                .map(|_| ())
                .map_err(std::io::Error::from);
            input.drain();
            match result {
                Ok(()) => send(&sink, id, Body::Done),
                Err(err) => send_error(&sink, id, &err),
            }
        });
    }

    fn data(&mut self, id: u32, data: Vec<u8>) {
        if let Some(tx) = self.tars.get(&id) {
            if tx.send(Some(data)).is_err() {
                self.tars.remove(&id);
            }
        } else if let Some(file) = self.files.get_mut(&id) {
            if let Err(err) = file.write_all(&data) {
                self.files.remove(&id);
                send_error(&self.sink, id, &err);
            }
        }
    }

    fn end(&mut self, id: u32) {
        if let Some(tx) = self.tars.remove(&id) {
            let _ = tx.send(None);
        } else if let Some(file) = self.files.remove(&id) {
            match file.sync_all() {
                Ok(()) => send(&self.sink, id, Body::Done),
                Err(err) => send_error(&self.sink, id, &err),
            }
        }
    }
}

fn send_file(sink: &Sink, id: u32, path: &str) {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(err) => return send_error(sink, id, &err),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(err) => return send_error(sink, id, &err),
    };
    send(
        sink,
        id,
        Body::FileInfo {
            size: meta.len(),
            mode: meta.permissions().mode() & 0o7777,
        },
    );
    let mut chunk = vec![0u8; MAX_CHUNK];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return send(sink, id, Body::End),
            Ok(n) => send(sink, id, Body::Data(chunk[..n].to_vec())),
            Err(err) => return send_error(sink, id, &err),
        }
    }
}

fn send_tar(sink: &Sink, id: u32, path: &str) {
    let mut out = ChunkWriter {
        sink: sink.clone(),
        id,
        buffer: Vec::new(),
    };
    match tar::pack(Path::new(path), &mut out).and_then(|_| out.flush()) {
        Ok(()) => send(sink, id, Body::End),
        Err(err) => send_error(sink, id, &err),
    }
}

/// Reads the chunks of a tar upload as one stream; `None` marks its end.
struct ChunkReader {
    rx: Receiver<Option<Vec<u8>>>,
    current: Vec<u8>,
    offset: usize,
}

impl ChunkReader {
    /// Consumes what is left so the sender never blocks on an abandoned upload.
    fn drain(&mut self) {
        while let Ok(Some(_)) = self.rx.recv() {}
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            match self.rx.recv() {
                Ok(Some(chunk)) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                Ok(None) | Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.offset);
        out[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// Sends written bytes as `Data` chunks of at most `MAX_CHUNK`.
struct ChunkWriter {
    sink: Sink,
    id: u32,
    buffer: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(MAX_CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() == MAX_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            send(
                &self.sink,
                self.id,
                Body::Data(std::mem::take(&mut self.buffer)),
            );
        }
        Ok(())
    }
}
