//! What the sentinel and a worker process say over the worker's pipes.
//!
//! Each message is a frame: a 4-byte little-endian length, then that many bytes
//! of JSON. The sentinel writes a [`Job`] to the worker's stdin; the worker
//! answers with a [`Done`] on its original stdout (task functions that print
//! write to stderr instead, so they cannot corrupt the protocol).

use std::io::{self, Read, Write};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::task::{Task, TaskError};

/// Largest frame accepted, in bytes: far above any package, below any harm.
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// A task for a worker to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// The verified task.
    pub task: Task,
    /// The task's time limit, passed to functions that honour it (`exec`, `http.request`).
    pub timeout_ms: Option<u64>,
}

/// A worker's answer: the outcome and what it cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    /// The task's id.
    pub id: String,
    /// The result or the error.
    pub outcome: Result<Value, TaskError>,
    /// When the function started.
    pub started: DateTime<Utc>,
    /// When it returned.
    pub stopped: DateTime<Utc>,
}

fn too_large(length: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame of {length} bytes is too large"),
    )
}

/// Writes one frame (blocking; the worker side).
pub fn write_frame(writer: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    let body = serde_json::to_vec(message)?;
    let length = u32::try_from(body.len()).map_err(|_| too_large(body.len()))?;
    writer.write_all(&length.to_le_bytes())?;
    writer.write_all(&body)?;
    writer.flush()
}

/// Reads one frame (blocking; the worker side); `None` at a clean end of input.
pub fn read_frame<T: DeserializeOwned>(reader: &mut impl Read) -> io::Result<Option<T>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(too_large(length));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Writes one frame (the sentinel side).
pub async fn send(
    writer: &mut (impl AsyncWriteExt + Unpin),
    message: &impl Serialize,
) -> io::Result<()> {
    let body = serde_json::to_vec(message)?;
    let length = u32::try_from(body.len()).map_err(|_| too_large(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length.to_le_bytes());
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// Reads one frame (the sentinel side); an end of input is an error: the worker is gone.
pub async fn receive<T: DeserializeOwned>(
    reader: &mut (impl AsyncReadExt + Unpin),
) -> io::Result<T> {
    let mut length = [0u8; 4];
    reader.read_exact(&mut length).await?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(too_large(length));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_of_input_is_none() {
        let job = Job {
            task: Task::new("q8s.noop"),
            timeout_ms: Some(5),
        };
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &job).expect("write");
        let mut reader = bytes.as_slice();
        let read: Job = read_frame(&mut reader).expect("read").expect("a frame");
        assert_eq!(read.task, job.task);
        assert!(read_frame::<Job>(&mut reader).expect("read").is_none());
    }
}
