//! The write-stall timeout of a connection (docs/behaviour.md §6): a peer that reads nothing
//! for the idle timeout while an answer waits to be written loses its connection.
//!
//! hyper has no write timeout. A client that pipelines requests and never reads its answers
//! would otherwise hold each answer (and hyper's buffers) until it goes away: with large
//! identities, hundreds of megabytes for a few hundred such clients. [`WriteStallTimeout`]
//! wraps the TCP stream given to hyper and fails a write that makes no progress for the
//! timeout; hyper then drops the connection and everything it held.
//!
//! Only a write the kernel refuses (its send buffer is full because the peer stopped reading)
//! arms the timer, so a connection whose writes go through pays one branch per write and
//! nothing else; the timer is allocated on the connection's first stall and reused after.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream whose writes fail with [`io::ErrorKind::TimedOut`] once the peer has accepted no
/// byte for `timeout` while a write was waiting (module docs). Reads, flushes and shutdown pass
/// through.
#[derive(Debug)]
pub struct WriteStallTimeout<T> {
    inner: T,
    timeout: Duration,
    /// The deadline of the current stall, allocated on the first one.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the current stall (false once a write went through).
    stalled: bool,
}

impl<T> WriteStallTimeout<T> {
    /// `inner`, whose writes may stall for at most `timeout`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        WriteStallTimeout {
            inner,
            timeout,
            timer: None,
            stalled: false,
        }
    }

    /// The outcome of a write attempt: progress ends the stall; `Pending` starts it (or keeps
    /// it running) and becomes an error once the timeout has passed.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if attempt.is_ready() {
            self.stalled = false;
            return attempt;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = match (&mut self.timer, self.stalled) {
            (Some(timer), true) => timer,
            (Some(timer), false) => {
                timer.as_mut().reset(deadline);
                timer
            }
            (None, _) => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.stalled = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer read nothing for the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStallTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStallTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, attempt)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, attempt)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Only a write that goes through ends a stall; a TCP flush is always ready.
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes go through while the peer reads, however often they have to wait for it; once
    /// it reads nothing more, the stalled write fails with `TimedOut`.
    #[tokio::test]
    async fn a_write_fails_only_when_the_peer_reads_nothing_for_the_timeout() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut stream = WriteStallTimeout::new(near, Duration::from_secs(1));
        let chunk = [7u8; 48];
        // The peer reads exactly what the first 8 writes send (6 times its buffer), then stops
        // reading but keeps the pipe open.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 8 * 48];
            let read = far.read_exact(&mut buf).await;
            (far, read.is_ok())
        });
        for _ in 0..8 {
            assert!(stream.write_all(&chunk).await.is_ok());
        }
        let (far, read) = reader.await.expect("reader");
        assert!(read);
        let error = loop {
            if let Err(error) = stream.write_all(&chunk).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(far);
    }
}
