//! `flatrender-node`: the agent that runs on render machines.

use clap::Parser;

/// Polls a FlatRender orchestrator for render work and runs it with the
/// renderers configured on this machine. The secret comes from
/// `FLATRENDER_NODE_SECRET` or the config file's `secret_file`.
#[derive(Debug, Parser)]
#[command(name = "flatrender-node", version)]
struct Cli {
    #[command(flatten)]
    node: node_agent::config::NodeArgs,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = node_agent::config::main_with(Cli::parse().node).await;
    std::process::exit(code);
}
