//! What openraft holds as a snapshot's data.
//!
//! A snapshot this node built is a RocksDB checkpoint directory (hard links: building one
//! costs a flush and a directory of links, whatever the size of the store). It is never
//! copied into a file here: [`PackedView`] reads the directory *as if* it were packed in the
//! format of [`crate::state_machine`] (magic, then name/size/bytes per file, then an empty
//! name), producing the bytes on demand while openraft streams them to a follower. A
//! snapshot received from a leader is a real packed file ([`SnapshotData::File`]), which is
//! also what `begin_receiving_snapshot` hands out to be written.
//!
//! The view opens every file of the checkpoint when it is created, so the directory may be
//! replaced by a newer snapshot (and deleted) while a transfer is under way: the open files
//! stay readable. Checkpoint files are immutable (SST and blob files are hard links, the
//! manifest is a copy), so sizes taken at opening hold.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// Largest read handed to a blocking thread at once.
const READ_BYTES: u64 = 1 << 20;

/// A snapshot's bytes: a packed file, or a checkpoint directory read as packed.
#[derive(Debug)]
pub enum SnapshotData {
    File(tokio::fs::File),
    Packed(PackedView),
}

#[derive(Debug)]
enum Piece {
    /// Format bytes (magic, a file's header, the end mark).
    Bytes(Vec<u8>),
    /// A file's contents.
    File { file: Arc<std::fs::File>, len: u64 },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::File { len, .. } => *len,
        }
    }
}

/// A checkpoint directory read as a packed snapshot (see the module docs).
#[derive(Debug)]
pub struct PackedView {
    /// Pieces with the offset each starts at.
    pieces: Vec<(u64, Piece)>,
    len: u64,
    pos: u64,
    /// Bytes read ahead for `pos` onwards.
    ready: Vec<u8>,
    ready_at: usize,
    reading: Option<tokio::task::JoinHandle<io::Result<Vec<u8>>>>,
}

impl PackedView {
    /// Opens every regular file of `dir` (blocking: call from a blocking context).
    pub fn open(dir: &Path, magic: &[u8]) -> io::Result<PackedView> {
        let mut names: Vec<_> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        let mut pieces = Vec::new();
        let mut at = 0u64;
        let mut push = |piece: Piece, pieces: &mut Vec<(u64, Piece)>| {
            let l = piece.len();
            pieces.push((at, piece));
            at += l;
        };
        push(Piece::Bytes(magic.to_vec()), &mut pieces);
        for name in names {
            let path = dir.join(&name);
            let file = std::fs::File::open(&path)?;
            let meta = file.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let name = name.to_string_lossy().to_string();
            let mut header = Vec::with_capacity(name.len() + 12);
            header.extend_from_slice(&(name.len() as u32).to_be_bytes());
            header.extend_from_slice(name.as_bytes());
            header.extend_from_slice(&meta.len().to_be_bytes());
            push(Piece::Bytes(header), &mut pieces);
            if meta.len() > 0 {
                push(
                    Piece::File {
                        file: Arc::new(file),
                        len: meta.len(),
                    },
                    &mut pieces,
                );
            }
        }
        push(Piece::Bytes(0u32.to_be_bytes().to_vec()), &mut pieces);
        Ok(PackedView {
            pieces,
            len: at,
            pos: 0,
            ready: Vec::new(),
            ready_at: 0,
            reading: None,
        })
    }

    /// Total length of the packed form.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn piece_at(&self, pos: u64) -> Option<&(u64, Piece)> {
        let i = self.pieces.partition_point(|(start, _)| *start <= pos);
        self.pieces.get(i.checked_sub(1)?)
    }
}

impl AsyncRead for PackedView {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                this.pos += n as u64;
                return Poll::Ready(Ok(()));
            }
            if let Some(h) = this.reading.as_mut() {
                let got = ready!(Pin::new(h).poll(cx));
                this.reading = None;
                let data = got.map_err(io::Error::other)??;
                if data.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "checkpoint file shorter than when opened",
                    )));
                }
                this.ready = data;
                this.ready_at = 0;
                continue;
            }
            if this.pos >= this.len || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let pos = this.pos;
            let Some((start, piece)) = this.piece_at(pos) else {
                return Poll::Ready(Ok(()));
            };
            let off = pos - start;
            match piece {
                Piece::Bytes(b) => {
                    this.ready = b[off as usize..].to_vec();
                    this.ready_at = 0;
                }
                Piece::File { file, len } => {
                    let (file, n) = (file.clone(), (len - off).min(READ_BYTES));
                    this.reading = Some(tokio::task::spawn_blocking(move || {
                        let mut v = vec![0u8; n as usize];
                        file.read_exact_at(&mut v, off)?;
                        Ok(v)
                    }));
                }
            }
        }
    }
}

impl AsyncSeek for PackedView {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let target = match position {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the snapshot",
            ));
        };
        self.pos = target;
        self.ready.clear();
        self.ready_at = 0;
        // A read under way for the old position is left to finish and dropped.
        self.reading = None;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a snapshot built here is read-only",
    )
}

impl AsyncWrite for PackedView {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(read_only()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::File(f) => Pin::new(f).poll_read(cx, buf),
            SnapshotData::Packed(v) => Pin::new(v).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            SnapshotData::File(f) => Pin::new(f).start_seek(position),
            SnapshotData::Packed(v) => Pin::new(v).start_seek(position),
        }
    }
    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            SnapshotData::File(f) => Pin::new(f).poll_complete(cx),
            SnapshotData::Packed(v) => Pin::new(v).poll_complete(cx),
        }
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SnapshotData::File(f) => Pin::new(f).poll_write(cx, buf),
            SnapshotData::Packed(v) => Pin::new(v).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::File(f) => Pin::new(f).poll_flush(cx),
            SnapshotData::Packed(v) => Pin::new(v).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::File(f) => Pin::new(f).poll_shutdown(cx),
            SnapshotData::Packed(v) => Pin::new(v).poll_shutdown(cx),
        }
    }
}
