//! The one error type of every renderer.

use std::path::PathBuf;

/// Why a frame was not rendered. Expected failures (bad parameters, a broken
/// scene, a renderer that failed) are kept apart from I/O on the node itself.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The job's parameters are out of bounds, of the wrong kind for this
    /// renderer, or contain characters outside the safe set. Nothing was run.
    #[error("invalid render parameters: {0}")]
    InvalidParams(String),
    /// The scene file is missing, unreadable or not a valid scene.
    #[error("invalid scene: {0}")]
    SceneInvalid(String),
    /// The renderer ran and failed; `reason` carries its own error lines.
    #[error("renderer failed: {reason}")]
    RendererFailed {
        /// The renderer's error lines, or its exit status when it printed none.
        reason: String,
    },
    /// The renderer finished but the expected output file does not exist.
    #[error("output file {} is missing", path.display())]
    OutputMissing {
        /// Where the frame was expected.
        path: PathBuf,
    },
    /// The output file exists but does not decode as a PNG image.
    #[error("output file {} is not a PNG image: {reason}", path.display())]
    OutputNotAnImage {
        /// The file that failed to decode.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The job was cancelled before the frame was finished.
    #[error("cancelled")]
    Cancelled,
    /// No renderer of that name is configured on this machine.
    #[error("renderer {name:?} is not configured on this node")]
    UnknownRenderer {
        /// The name the job asked for.
        name: String,
    },
    /// An I/O failure on the node (creating the output directory, spawning
    /// the renderer, writing the image).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl RenderError {
    /// An [`RenderError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A [`RenderError::InvalidParams`].
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidParams(message.into())
    }
}
