//! The orchestrator URLs an agent knows, checked when it starts.

/// A bad orchestrator URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerUrlError {
    /// No URL at all.
    #[error("at least one server URL is required")]
    Empty,
    /// A URL the agent cannot use.
    #[error("server URL {url:?} {reason}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One or more orchestrator base URLs (`http://host:port`, optionally with
/// a path prefix), checked, without duplicates, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrls(pub(super) Vec<String>);

impl ServerUrls {
    /// Checks URLs given as a list whose entries may themselves be
    /// comma-separated (`"http://a:8080,http://b:8080"`); empty entries are
    /// skipped, duplicates kept once. Only `http` is accepted: this build
    /// has no TLS, so an `https` URL is refused here rather than failing on
    /// every request.
    pub fn parse<I, S>(urls: I) -> Result<Self, ServerUrlError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out: Vec<String> = Vec::new();
        for entry in urls {
            for raw in entry.as_ref().split(',') {
                let raw = raw.trim();
                if raw.is_empty() {
                    continue;
                }
                let url = check_url(raw)?;
                if !out.contains(&url) {
                    out.push(url);
                }
            }
        }
        if out.is_empty() {
            return Err(ServerUrlError::Empty);
        }
        Ok(Self(out))
    }

    /// The URLs, in failover order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for ServerUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

fn check_url(raw: &str) -> Result<String, ServerUrlError> {
    let invalid = |reason: &str| ServerUrlError::Invalid {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(raw)
        .map_err(|_| invalid("is not a URL; write it like http://127.0.0.1:8080"))?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(invalid(
                "uses https, but this build of the agent has no TLS support; \
                 use http:// (e.g. to a TLS-terminating proxy next to the node)",
            ));
        }
        _ => {
            return Err(invalid(
                "must start with http:// (for example http://127.0.0.1:8080)",
            ));
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "must not carry a user name or password (requests are signed with the node's secret)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("must not have a query (?…) or a fragment (#…)"));
    }
    Ok(raw.trim_end_matches('/').to_string())
}
