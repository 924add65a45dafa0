//! A saga that survives `kill -9`.
//!
//! ```text
//! cargo run --example crash_recovery
//! ```
//!
//! The example runs itself as a child process that starts a slow five-step
//! saga, kills that child with SIGKILL in the middle, then opens the engine
//! on the same data directory: the saga resumes where it stood and
//! completes. The interrupted step runs again with the same idempotency key.

use saga_engine::{Engine, EventKind, SagaDefinition, SledStore, Step, StepContext, StepError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Work {
    done: Vec<String>,
}

struct Slow;
#[saga_engine::async_trait]
impl Step<Work> for Slow {
    async fn run(&self, ctx: &StepContext, w: &mut Work) -> Result<(), StepError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.done
            .push(format!("{} (attempt {})", ctx.step, ctx.attempt));
        Ok(())
    }
    async fn compensate(&self, _: &StepContext, _: &Work) -> Result<(), StepError> {
        Ok(())
    }
}

async fn engine(dir: &Path) -> Engine {
    let mut def = SagaDefinition::<Work>::builder("slow", 1);
    for i in 1..=5 {
        def = def.step(format!("step_{i}"), Slow);
    }
    Engine::builder(SledStore::open(dir).expect("store opens"))
        .register(def.build().expect("valid"))
        .open()
        .await
        .expect("engine opens")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let engine = engine(Path::new(&args[2])).await;
        let id = engine
            .start("slow", &Work { done: vec![] }, Some("job-1"))
            .await
            .expect("start");
        println!("child: started saga {id}");
        engine.wait(&id).await.expect("never reached: killed first");
        return;
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--child")
        .arg(dir.path())
        .spawn()
        .expect("child starts");
    std::thread::sleep(Duration::from_millis(1000));
    child.kill().expect("SIGKILL"); // SIGKILL on Unix
    child.wait().expect("reaped");
    println!("parent: killed the child with SIGKILL mid-saga");

    let engine = engine(dir.path()).await;
    let id = engine
        .find_by_key("job-1")
        .await
        .expect("store readable")
        .expect("the acknowledged start survived the kill");
    let before = engine.status(&id).await.expect("status");
    println!(
        "parent: reopened; saga {id} is {} with {} of 5 steps done; resuming",
        before.status(),
        before
            .state
            .steps
            .iter()
            .filter(|s| s.state == saga_engine::StepState::Succeeded)
            .count()
    );
    let done = engine.wait(&id).await.expect("finishes");
    println!("parent: saga {id} {}", done.status());
    for e in engine.history(&id).await.expect("history") {
        let marker = if e.kind == EventKind::Resumed {
            "   <- after the kill"
        } else {
            ""
        };
        println!(
            "  #{:<2} {}{marker}",
            e.seq,
            serde_json::to_string(&e.kind).unwrap()
        );
    }
}
