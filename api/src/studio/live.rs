//! The studio CLI over the WebSocket contract
//! (`contracts/websocket/render-progress.md`): `render watch` follows a
//! render live (reconnecting with `?after=` the last position, so it misses
//! nothing), `render logs --follow` prints new log lines; every line of a
//! log is printed escaped ([`safe_line`]), never interpreted.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::Client;

/// How often a lost connection is tried again before giving up.
const RECONNECTS: u32 = 10;

/// A WebSocket connection to the server.
type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Client {
    /// The WebSocket URL of `path` (`?token=` added).
    fn ws_url(&self, path: &str, after: Option<i64>) -> anyhow::Result<String> {
        let base = if let Some(rest) = self.server.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if self.server.starts_with("https://") {
            bail!("this build follows renders over ws:// only (the server is https://)");
        } else {
            bail!("the server URL must start with http://");
        };
        let mut url = format!("{base}{path}?token={}", self.token);
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        Ok(url)
    }

    async fn connect(&self, path: &str, after: Option<i64>) -> anyhow::Result<Socket> {
        let url = self.ws_url(path, after)?;
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                Err(super::api_error(
                    reqwest::StatusCode::from_u16(response.status().as_u16())
                        .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
                    &body,
                ))
            }
            Err(e) => Err(e).with_context(|| format!("cannot reach {}", self.server)),
        }
    }

    /// Calls `each` with every message of `path`'s stream, reconnecting
    /// with `?after=` the last stored position when the connection drops,
    /// until `each` answers false. `first` are messages sent on connecting
    /// (log follows).
    pub async fn follow(
        &self,
        path: &str,
        first: &[Value],
        mut each: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let mut after: Option<i64> = None;
        let mut failures = 0;
        loop {
            let mut socket = match self.connect(path, after).await {
                Ok(s) => s,
                Err(e) if failures < RECONNECTS && after.is_some() => {
                    failures += 1;
                    tracing::debug!(error = %e, "reconnecting");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(failures))).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for m in first {
                socket.send(Message::text(m.to_string())).await?;
            }
            while let Some(frame) = socket.next().await {
                let text = match frame {
                    Ok(Message::Text(t)) => t,
                    Ok(Message::Close(close)) => {
                        tracing::debug!(?close, "the server closed the stream");
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "the stream broke");
                        break;
                    }
                };
                let message: Value = serde_json::from_str(text.as_str())
                    .context("the server sent a message that is not JSON")?;
                failures = 0;
                if let Some(p) = message["position"].as_i64() {
                    after = Some(p);
                }
                if !each(&message) {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
            }
            failures += 1;
            if failures > RECONNECTS || after.is_none() {
                bail!("the progress stream closed and could not be resumed");
            }
            tokio::time::sleep(Duration::from_millis(250 * u64::from(failures))).await;
        }
    }

    /// Follows a render live until it ends, with a progress bar; answers
    /// the render as the public API shows it then.
    pub async fn watch(&self, render: &str) -> anyhow::Result<Value> {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:40}] {pos}/{len} frames ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let mut name = render.to_string();
        let mut done = BTreeSet::new();
        let mut status = String::from("active");
        let mut running = String::new();
        self.follow(&format!("/v1/ws/renders/{render}"), &[], |m| {
            match m["type"].as_str().unwrap_or_default() {
                "snapshot" => {
                    let r = &m["render"];
                    name = r["name"].as_str().map_or(name.clone(), safe_line);
                    status = r["status"].as_str().unwrap_or("active").to_string();
                    bar.set_length(r["frames_total"].as_u64().unwrap_or(0));
                    bar.set_position(r["frames_done"].as_u64().unwrap_or(0));
                }
                "frame.done" => {
                    if let Some(f) = m["frame"].as_u64() {
                        done.insert(f);
                        bar.inc(1);
                    }
                }
                "progress" => {
                    running = format!(
                        ", frame {} at {}%",
                        m["frame"],
                        m["percent"].as_f64().unwrap_or(0.0).round()
                    );
                }
                "render.status" => {
                    status = m["status"].as_str().unwrap_or_default().to_string();
                    running.clear();
                }
                _ => {}
            }
            bar.set_message(format!("{name} {status}{running}"));
            !matches!(status.as_str(), "completed" | "failed" | "cancelled")
        })
        .await?;
        bar.finish();
        // The read model follows the log: wait (a little) until it says so too.
        for _ in 0..50 {
            let r = self.get(&format!("/v1/renders/{render}")).await?;
            if r["status"] == status.as_str() {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut r = self.get(&format!("/v1/renders/{render}")).await?;
        r["status"] = json!(status);
        Ok(r)
    }

    /// Prints a task attempt's log (or its last `tail` lines), escaped.
    pub async fn print_log(
        &self,
        render: &str,
        task: &str,
        attempt: Option<u32>,
        tail: Option<usize>,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<()> {
        let attempts = self
            .get(&format!("/v1/renders/{render}/tasks/{task}/attempts"))
            .await?;
        let items = attempts["items"].as_array().cloned().unwrap_or_default();
        let chosen: Vec<u64> = match attempt {
            Some(a) => vec![u64::from(a)],
            None => items.iter().filter_map(|i| i["attempt"].as_u64()).collect(),
        };
        if chosen.is_empty() {
            bail!("task {task} has no log yet");
        }
        for a in chosen {
            let mut path = format!("/v1/renders/{render}/tasks/{task}/attempts/{a}/log");
            if let Some(n) = tail {
                path.push_str(&format!("?tail={n}"));
            }
            let bytes = self.get_bytes(&path).await?;
            writeln!(out, "== task {task}, attempt {a} ==")?;
            for line in String::from_utf8_lossy(&bytes).lines() {
                writeln!(out, "{}", safe_line(line))?;
            }
        }
        Ok(())
    }

    /// Prints new log lines of a render's tasks (or one task) as they
    /// arrive, escaped, until the render ends.
    pub async fn follow_logs(
        &self,
        render: &str,
        task: Option<&str>,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<()> {
        let follow = match task {
            Some(t) => json!({ "type": "follow_logs", "task_id": t }),
            None => json!({ "type": "follow_logs" }),
        };
        let mut failed = None;
        self.follow(
            &format!("/v1/ws/renders/{render}"),
            &[follow],
            |m| match m["type"].as_str().unwrap_or_default() {
                "log" => {
                    for line in m["lines"].as_array().into_iter().flatten() {
                        let text = line["text"].as_str().unwrap_or_default();
                        let attempt = m["attempt"].as_u64().unwrap_or(0);
                        let task = m["task_id"].as_str().unwrap_or_default();
                        let short = task.get(..8).unwrap_or(task);
                        if let Err(e) = writeln!(out, "[{short}#{attempt}] {}", safe_line(text)) {
                            failed = Some(e);
                            return false;
                        }
                    }
                    true
                }
                "render.status" | "snapshot" => {
                    let s = m["status"]
                        .as_str()
                        .or(m["render"]["status"].as_str())
                        .unwrap_or_default();
                    !matches!(s, "completed" | "failed" | "cancelled")
                }
                _ => true,
            },
        )
        .await?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(())
    }
}

/// A log line as it is safe to print on a terminal: control characters
/// (escape sequences, carriage returns, backspaces), and the characters
/// that reorder text, are shown escaped (`\x1b`, `\u{202e}`) instead of
/// acted on. Tabs stay.
pub fn safe_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let reorders = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c == '\t' {
            out.push(c);
        } else if c.is_control() && (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else if c.is_control() || reorders {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::safe_line;

    #[test]
    fn terminal_controls_are_shown_not_acted_on() {
        assert_eq!(safe_line("plain\ttext é"), "plain\ttext é");
        assert_eq!(
            safe_line("\x1b[2J\x1b]0;owned\x07"),
            "\\x1b[2J\\x1b]0;owned\\x07"
        );
        assert_eq!(safe_line("a\rb\x08c\x00"), "a\\x0db\\x08c\\x00");
        assert_eq!(safe_line("\u{9b}31m"), "\\x9b31m");
        assert_eq!(safe_line("abc\u{202e}fed"), "abc\\u{202e}fed");
    }
}
