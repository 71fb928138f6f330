//! A libvirt console stream (blocking `virStream` calls) as an async byte
//! stream: two threads move the bytes, tasks connect them to a tokio duplex.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use virt::stream::Stream;

use crate::driver::ConsoleStream;

const BUFFER: usize = 64 * 1024;
/// How much console output is kept per VM when the log file is out of reach.
pub(crate) const KEPT_OUTPUT_BYTES: usize = 1024 * 1024;

/// The last [`KEPT_OUTPUT_BYTES`] a VM's console printed while the driver
/// had it open.
#[derive(Debug, Default)]
pub(crate) struct KeptOutput(Mutex<VecDeque<u8>>);

impl KeptOutput {
    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.extend(bytes);
        let excess = kept.len().saturating_sub(KEPT_OUTPUT_BYTES);
        kept.drain(..excess);
    }

    pub fn tail(&self, max_bytes: usize) -> Vec<u8> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.range(kept.len().saturating_sub(max_bytes)..)
            .copied()
            .collect()
    }
}

/// Bridges an opened console stream. Closing the returned stream aborts the
/// libvirt stream, which frees the console for the next client.
pub(crate) fn bridge(stream: Stream, kept: Option<Arc<KeptOutput>>) -> ConsoleStream {
    let (client, ours) = tokio::io::duplex(BUFFER);
    let (mut from_client, mut to_client) = tokio::io::split(ours);

    let (output_sender, mut output) = mpsc::channel::<Vec<u8>>(16);
    let receiving = stream.clone();
    std::thread::spawn(move || {
        let mut buffer = vec![0; BUFFER];
        // recv returns 0 at the end of the stream and fails once aborted.
        while let Ok(read @ 1..) = receiving.recv(&mut buffer) {
            let bytes = &buffer[..read.unsigned_abs()];
            if let Some(kept) = &kept {
                kept.push(bytes);
            }
            if output_sender.blocking_send(bytes.to_vec()).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(bytes) = output.recv().await {
            if to_client.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    });

    let (input_sender, mut input) = mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        let mut buffer = vec![0; BUFFER];
        while let Ok(read @ 1..) = from_client.read(&mut buffer).await {
            if input_sender.send(buffer[..read].to_vec()).await.is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        'input: while let Some(bytes) = input.blocking_recv() {
            let mut sent = 0;
            while sent < bytes.len() {
                match stream.send(&bytes[sent..]) {
                    Ok(written @ 1..) => sent += written.unsigned_abs(),
                    _ => break 'input,
                }
            }
        }
        // The client is gone: unblock the receiving thread and release the console.
        let _ = stream.abort();
    });
    Box::new(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_output_keeps_the_most_recent_bytes() {
        let kept = KeptOutput::default();
        kept.push(b"hello ");
        kept.push(b"world");
        assert_eq!(kept.tail(5), b"world");
        assert_eq!(kept.tail(100), b"hello world");
        kept.push(&vec![b'x'; KEPT_OUTPUT_BYTES]);
        assert_eq!(kept.tail(usize::MAX).len(), KEPT_OUTPUT_BYTES);
        assert!(!kept.tail(usize::MAX).contains(&b'h'));
    }
}
