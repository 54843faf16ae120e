//! A child process in its own process group, its output read line by line.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{Receiver, Sender, channel};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};

/// Lines longer than this are split.
const MAX_LINE: u64 = 4096;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`, as the node contract's log lines name them.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One line of output, without its line ending.
#[derive(Debug)]
pub(crate) struct Line {
    pub stream: Stream,
    pub text: String,
}

/// A running child that leads its own process group. Dropping it kills the
/// whole group and reaps the child, so nothing it started outlives it.
#[derive(Debug)]
pub(crate) struct Group {
    child: Child,
    pgid: Pid,
    reaped: bool,
}

impl Group {
    /// Spawns `cmd` (which must have been given `process_group(0)` and piped
    /// stdout and stderr) and starts reading its output.
    pub(crate) fn spawn(cmd: &mut Command) -> std::io::Result<(Self, Receiver<Line>)> {
        let mut child = cmd.spawn()?;
        let pgid = Pid::from_child(&child);
        let (tx, rx) = channel();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let group = Self {
            child,
            pgid,
            reaped: false,
        };
        if let Some(out) = stdout {
            pump("renderer-stdout", out, Stream::Stdout, tx.clone())?;
        }
        if let Some(err) = stderr {
            pump("renderer-stderr", err, Stream::Stderr, tx)?;
        }
        Ok((group, rx))
    }

    /// Whether the child has exited, without reaping it: while it is not
    /// reaped its pid cannot be reused, so killing its group stays safe.
    pub(crate) fn has_exited(&self) -> bool {
        if self.reaped {
            return true;
        }
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        matches!(waitid(WaitId::Pid(self.pgid), opts), Ok(Some(_)))
    }

    /// Sends SIGKILL to every process in the group (the child and anything
    /// it started that did not leave the group).
    pub(crate) fn kill(&self) {
        if !self.reaped {
            // ESRCH (already gone) is fine.
            let _ = kill_process_group(self.pgid, Signal::KILL);
        }
    }

    /// Kills what is left of the group, then reaps the child.
    pub(crate) fn finish(&mut self) -> std::io::Result<ExitStatus> {
        self.kill();
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.finish();
        }
    }
}

/// Reads `r` line by line on its own thread into `tx`, until EOF or until
/// the receiver is gone.
fn pump(
    name: &str,
    r: impl Read + Send + 'static,
    stream: Stream,
    tx: Sender<Line>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match (&mut r).take(MAX_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        if tx.send(Line { stream, text }).is_err() {
                            break;
                        }
                    }
                }
            }
        })
        .map(drop)
}
