//! `flatrender render …`: the studio's render commands, each a client of
//! the public API (and of its WebSocket for `watch` and `logs --follow`).

use std::process::ExitCode;

use api::studio::Client;

use crate::cli::{RenderCommand, RenderRef};

pub(crate) async fn render_command(command: RenderCommand) -> anyhow::Result<ExitCode> {
    let ended = |r: &serde_json::Value| {
        if r["status"] == "completed" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match command {
        RenderCommand::Submit {
            render,
            watch,
            client,
        } => {
            let client = Client::new(&client)?;
            let submitted = client.submit(&render).await?;
            let id = submitted["id"].as_str().unwrap_or_default().to_string();
            say!("render_id = \"{id}\"");
            if submitted["schedulable"] == false {
                eprintln!(
                    "note: {}",
                    submitted["unschedulable_reason"]
                        .as_str()
                        .unwrap_or("no node can run it yet")
                );
            }
            if watch {
                let last = client.watch(&id).await?;
                return Ok(ended(&last));
            }
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::List {
            status,
            page,
            page_size,
            client,
        } => {
            let mut path = format!("/v1/renders?page={page}&page_size={page_size}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            let list = Client::new(&client)?.get(&path).await?;
            for r in list["items"].as_array().into_iter().flatten() {
                say!("{}", api::studio::render_line(r));
            }
            eprintln!("page {}, {} renders in all", list["page"], list["total"]);
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::Show(r) => {
            let render = Client::new(&r.client)?
                .get(&format!("/v1/renders/{}", r.id))
                .await?;
            say!("{}", serde_json::to_string_pretty(&render)?);
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::Watch(r) => {
            let last = Client::new(&r.client)?.watch(&r.id.to_string()).await?;
            say!("{}: {}", r.id, last["status"].as_str().unwrap_or(""));
            Ok(ended(&last))
        }
        RenderCommand::Logs {
            render,
            task,
            attempt,
            tail,
            follow,
        } => {
            let client = Client::new(&render.client)?;
            let id = render.id.to_string();
            let mut out = std::io::stdout().lock();
            if follow {
                let task = task.map(|t| t.to_string());
                client.follow_logs(&id, task.as_deref(), &mut out).await?;
            } else {
                let task =
                    task.ok_or_else(|| anyhow::anyhow!("--task is required without --follow"))?;
                client
                    .print_log(&id, &task.to_string(), attempt, tail, &mut out)
                    .await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::Pause(r) => control(r, "pause").await,
        RenderCommand::Resume(r) => control(r, "resume").await,
        RenderCommand::Cancel(r) => control(r, "cancel").await,
        RenderCommand::Retry(r) => control(r, "retry").await,
        RenderCommand::Priority { render, priority } => {
            let answer = Client::new(&render.client)?
                .post(
                    &format!("/v1/renders/{}/priority", render.id),
                    Some(&serde_json::json!({ "priority": priority })),
                    None,
                )
                .await?;
            say!(
                "{}: {} at priority {priority}",
                render.id,
                answer["status"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::Download { render, out } => {
            let n = Client::new(&render.client)?
                .download(&render.id.to_string(), &out)
                .await?;
            say!("{n} frames in {}, every SHA-256 checked", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn control(r: RenderRef, verb: &str) -> anyhow::Result<ExitCode> {
    let answer = Client::new(&r.client)?
        .post(&format!("/v1/renders/{}/{verb}", r.id), None, None)
        .await?;
    say!("{}: {}", r.id, answer["status"].as_str().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}
