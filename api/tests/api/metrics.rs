//! `/metrics`: text a Prometheus parser reads (checked line by line by the
//! exposition format's grammar), whose figures move when a render runs,
//! behind a token when one is configured.

use std::collections::BTreeMap;

use crate::{by, until};

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text exposition format, refusing anything it does not allow:
/// `# HELP`/`# TYPE`/`# UNIT` lines, samples `name{label="value",…} value`
/// whose family has a `# TYPE`, and `# EOF` as the last line.
fn parse(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(is_name(name), "metric name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "unknown"
                        ]
                        .contains(&t),
                        "type in {line:?}"
                    );
                    types.insert(name.to_string(), t.to_string());
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
                    assert!(is_name(key), "label name in {line:?}");
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c @ ('\\' | '"'))) => value.push(c),
                                other => panic!("escape {other:?} in {line:?}"),
                            },
                            Some((i, '"')) => break i,
                            Some((_, c)) => value.push(c),
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    };
                    labels.insert(key.to_string(), value);
                    rest = &after[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "sample name in {line:?}");
        let family = ["_total", "_count", "_sum", "_bucket", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has a # TYPE");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(url: &str, token: Option<&str>) -> (reqwest::StatusCode, String, String) {
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_when_a_render_runs() {
    let server = crate::e2e::server().await;
    let (status, content_type, text) = scrape(&server.url, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let before = parse(&text);
    assert_eq!(value(&before, "flatrender_leases_granted_total", &[]), 0.0);
    let _agent = crate::e2e::agent(&server, "metered").await;
    crate::e2e::submit(&server, 4, 2).await;
    until(
        &server.state.store,
        60,
        "the render to complete",
        |events| by(events, "render.job.completed.v1").count() == 1,
    )
    .await;
    let (_, _, text) = scrape(&server.url, None).await;
    let after = parse(&text);
    assert!(value(&after, "flatrender_leases_granted_total", &[]) >= 2.0);
    assert_eq!(
        value(&after, "flatrender_nodes", &[("status", "online")]),
        1.0
    );
    assert_eq!(
        value(&after, "flatrender_nodes", &[("status", "draining")]),
        0.0
    );
    assert!(
        value(
            &after,
            "flatrender_store_append_duration_seconds_count",
            &[]
        ) > value(
            &before,
            "flatrender_store_append_duration_seconds_count",
            &[]
        )
    );
    let claims = value(
        &after,
        "flatrender_http_request_duration_seconds_count",
        &[("route", "/v1/agent/claim"), ("method", "POST")],
    );
    assert!(claims >= 2.0, "claims timed by route: {claims}");
    // Route templates, never raw paths (ids would be unbounded labels).
    let routes: Vec<&String> = after
        .iter()
        .filter(|(n, _, _)| n == "flatrender_http_request_duration_seconds_count")
        .map(|(_, l, _)| &l["route"])
        .collect();
    assert!(
        routes
            .iter()
            .all(|r| !r.split('/').any(|seg| uuid::Uuid::parse_str(seg).is_ok())),
        "a raw path as a label: {routes:?}"
    );
    assert!(after.iter().any(
        |(n, l, _)| n == "flatrender_http_request_duration_seconds_count"
            && l["route"] == "/v1/agent/tasks/{task_id}/complete"
    ));
    for projection in ["renders", "nodes", "files"] {
        assert!(
            after
                .iter()
                .any(|(n, l, _)| n == "flatrender_projection_lag_events"
                    && l.get("projection").map(String::as_str) == Some(projection)),
            "lag of {projection}"
        );
    }
    // The render is done: nothing queued or running for anyone.
    assert_eq!(value(&after, "flatrender_queued_tasks", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_ask_for_the_token_when_one_is_configured() {
    let server =
        crate::e2e::server_with(|s| s.with_metrics_token(Some("metrics-s3cret".into()))).await;
    for token in [None, Some("wrong"), Some("metrics-s3cret-but-longer")] {
        let (status, _, body) = scrape(&server.url, token).await;
        assert_eq!(status, 401, "{token:?}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _, text) = scrape(&server.url, Some("metrics-s3cret")).await;
    assert_eq!(status, 200);
    assert!(!parse(&text).is_empty());
}

#[test]
fn the_parser_refuses_what_the_format_does_not_allow() {
    for bad in [
        "flatrender_x 1\n# EOF",                                   // no TYPE
        "# TYPE flatrender_x gauge\nflatrender_x{a=\"1} 1\n# EOF", // open label
        "# TYPE flatrender_x gauge\nflatrender_x one\n# EOF",      // not a number
        "# TYPE flatrender_x gauge\nflatrender_x 1",               // no EOF
    ] {
        assert!(std::panic::catch_unwind(|| parse(bad)).is_err(), "{bad:?}");
    }
    let good = parse("# TYPE flatrender_x gauge\nflatrender_x{a=\"q\\\"\"} 1.5\n# EOF");
    assert_eq!(good[0].1["a"], "q\"");
}
