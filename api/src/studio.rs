//! The `flatrender` commands a studio runs against a server: a client of
//! the public API only (`--server`, a token from `FLATRENDER_TOKEN` or a
//! token file), so a workstation submits to a farm it shares no disk with.

mod live;

pub use live::safe_line;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where the server is and who calls it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "FLATRENDER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The access token (from `flatrender token issue` or your identity
    /// provider).
    #[arg(long, env = "FLATRENDER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token; default `~/.config/flatrender/token`.
    #[arg(long, env = "FLATRENDER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// A render to submit.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// The scene: a builtin scene (`.json`) or a Blender file (`.blend`).
    #[arg(long)]
    pub scene: PathBuf,
    /// The renderer: `builtin` or `blender` (or one your nodes offer).
    #[arg(long, default_value = "builtin")]
    pub renderer: String,
    /// First frame.
    #[arg(long, default_value_t = 1)]
    pub first_frame: u32,
    /// Last frame.
    #[arg(long, default_value_t = 48)]
    pub last_frame: u32,
    /// Frames per task.
    #[arg(long, default_value_t = 2)]
    pub chunk_size: u32,
    /// Priority 0..=100.
    #[arg(long, default_value_t = 50)]
    pub priority: u8,
    /// Output size, `WIDTHxHEIGHT`.
    #[arg(long)]
    pub resolution: Option<String>,
    /// Samples per pixel.
    #[arg(long)]
    pub samples: Option<u32>,
    /// Retries per task.
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// Stop and fail (then retry) a task running longer than this.
    #[arg(long)]
    pub task_timeout_seconds: Option<u32>,
    /// Stop and fail (then retry) a task printing nothing and reporting
    /// no progress for this long.
    #[arg(long)]
    pub stall_timeout_seconds: Option<u32>,
    /// A render that must complete first (repeat for several): until then
    /// this one waits; if it fails or is cancelled, this one fails.
    #[arg(long = "depends-on")]
    pub depends_on: Vec<uuid::Uuid>,
    /// A name for people.
    #[arg(long)]
    pub name: Option<String>,
    /// Makes the submission safe to retry: the same key never creates a
    /// second render.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// A client of the public API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

/// An answer that is the contract's error body, as a message.
fn api_error(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match value["error"]["message"].as_str() {
        Some(message) => anyhow::anyhow!(
            "{message} ({status}, {})",
            value["error"]["code"].as_str().unwrap_or("error")
        ),
        None => anyhow::anyhow!("the server answered {status}"),
    }
}

impl Client {
    /// The client the arguments describe.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("reading the token file {}", file.display()))?,
            (None, None) => {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default();
                let file = home.join(".config/flatrender/token");
                std::fs::read_to_string(&file).with_context(|| {
                    "no token: set FLATRENDER_TOKEN, pass --token-file, or write it to \
                     ~/.config/flatrender/token (an operator prints one with `flatrender token issue`)"
                })?
            }
        };
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            server: args.server.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Vec<u8>> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        let status = response.status();
        let body = response.bytes().await?.to_vec();
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        Ok(body)
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let body = self
            .send(self.http.get(format!("{}{path}", self.server)))
            .await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// `GET path` as bytes.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.send(self.http.get(format!("{}{path}", self.server)))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.server));
        if let Some(b) = body {
            request = request.json(b);
        }
        if let Some(k) = key {
            request = request.header("Idempotency-Key", k);
        }
        Ok(serde_json::from_slice(&self.send(request).await?)?)
    }

    /// Uploads a scene file; returns its metadata.
    pub async fn upload(&self, path: &Path) -> anyhow::Result<Value> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("the scene path has no file name")?;
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let size = file.metadata().await?.len();
        // Streamed in chunks with a progress bar: a scene of gigabytes is
        // never held in memory.
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "uploading {msg} [{bar:40}] {bytes}/{total_bytes} ({eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(name.to_string());
        let chunks =
            futures_util::stream::try_unfold((file, bar.clone()), |(mut file, bar)| async move {
                use tokio::io::AsyncReadExt as _;
                let mut chunk = vec![0u8; 256 * 1024];
                let n = file.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                chunk.truncate(n);
                bar.inc(n as u64);
                Ok(Some((chunk, (file, bar))))
            });
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let request = self
            .http
            .post(format!("{}/v1/files?name={encoded}", self.server))
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .body(reqwest::Body::wrap_stream(chunks));
        let answer = self.send(request).await;
        bar.finish_and_clear();
        Ok(serde_json::from_slice(&answer?)?)
    }

    /// Uploads the scene and submits the render; returns the submission.
    pub async fn submit(&self, args: &SubmitArgs) -> anyhow::Result<Value> {
        let file = self.upload(&args.scene).await?;
        let resolution = match &args.resolution {
            Some(text) => {
                let (w, h) = text
                    .split_once('x')
                    .context("--resolution is WIDTHxHEIGHT, e.g. 1920x1080")?;
                json!({ "width": w.parse::<u32>()?, "height": h.parse::<u32>()? })
            }
            None => Value::Null,
        };
        let mut body = json!({
            "scene_file_id": file["id"],
            "renderer": args.renderer,
            "frames": { "start": args.first_frame, "end": args.last_frame },
            "chunk_size": args.chunk_size,
            "priority": args.priority,
            "resolution": resolution,
            "samples": args.samples,
            "max_retries": args.max_retries,
            "task_timeout_seconds": args.task_timeout_seconds,
            "stall_timeout_seconds": args.stall_timeout_seconds,
            "depends_on": args.depends_on,
        });
        if let Some(name) = &args.name {
            body["name"] = json!(name);
        }
        self.post("/v1/renders", Some(&body), args.idempotency_key.as_deref())
            .await
    }

    /// Writes every frame's current output into `dir`, checking each
    /// file's SHA-256 against the server's; returns how many.
    pub async fn download(&self, render: &str, dir: &Path) -> anyhow::Result<usize> {
        std::fs::create_dir_all(dir)?;
        let mut frames = Vec::new();
        let mut page = 1;
        loop {
            let p = self
                .get(&format!(
                    "/v1/renders/{render}/frames?page={page}&page_size=100"
                ))
                .await?;
            let items = p["items"].as_array().cloned().unwrap_or_default();
            frames.extend(items);
            if frames.len() as u64 >= p["total"].as_u64().unwrap_or(0)
                || p["items"].as_array().is_none_or(Vec::is_empty)
            {
                break;
            }
            page += 1;
        }
        let bar = ProgressBar::new(frames.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("downloading [{bar:40}] {pos}/{len} frames ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        for f in &frames {
            let number = f["frame"].as_u64().context("a frame without its number")?;
            let file = self
                .get(&format!(
                    "/v1/files/{}",
                    f["file_id"].as_str().unwrap_or_default()
                ))
                .await?;
            let bytes = self
                .get_bytes(&format!("/v1/renders/{render}/frames/{number}"))
                .await?;
            let digest = hex::encode(Sha256::digest(&bytes));
            if Some(digest.as_str()) != file["sha256"].as_str() {
                bail!(
                    "frame {number} arrived with SHA-256 {digest}, not the server's {}",
                    file["sha256"]
                );
            }
            let path = dir.join(format!("frame_{number:04}.png"));
            tokio::fs::write(&path, &bytes).await?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(frames.len())
    }
}

/// One line per render, for `render list`.
pub fn render_line(r: &Value) -> String {
    format!(
        "{}  {:<9}  {:>5}/{:<5} frames  {:>8} minor  {}  {}",
        r["id"].as_str().unwrap_or(""),
        r["status"].as_str().unwrap_or(""),
        r["frames_done"],
        r["frames_total"],
        r["cost_minor"],
        r["submitted_at"].as_str().unwrap_or(""),
        r["name"].as_str().unwrap_or(""),
    )
}
