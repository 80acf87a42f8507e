//! Idle connections cannot take the agent down: under a 1,024 file limit, 1,100 idle
//! connections to a webhook port leave `/healthz` answering (the ops server has its own
//! budget), the webhook's budget (`--max-connections`) refuses the surplus with 503 instead
//! of running out of file descriptors, and once the header timeout closes the idle ones the
//! webhook takes events again.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use integration_tests::{free_port, triggerd_bin, webhook_source, Agent, DELIVERY_TIMEOUT};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::net::TcpStream;
use tokio::time::Instant;

const IDLE: usize = 1_100;
const FILE_LIMIT: u64 = 1_024;

/// Lets this test process hold the idle connections itself (the soft limit may be 1,024).
fn raise_own_file_limit() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let wanted = (IDLE as u64 + 512).min(hard);
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).expect("setrlimit");
    }
    assert!(
        wanted >= IDLE as u64 + 256,
        "the hard file limit ({hard}) is too low for this test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stays_reachable_with_more_idle_connections_than_file_descriptors() {
    raise_own_file_limit();
    let dir = tempfile::tempdir().expect("temp dir");
    // The agent under a 1,024 file limit: a shell that lowers it and becomes triggerd.
    let wrapper = dir.path().join("triggerd-limited");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -n {FILE_LIMIT} || exit 90\nexec '{}' \"$@\"\n",
            triggerd_bin().display()
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let port = free_port();
    let agent = Agent::builder()
        .binary(&wrapper)
        .manifest(webhook_source("hooks", "push", port, "/push"))
        // Long enough that no idle connection is closed (freeing budget for one that should
        // be refused) while 1,100 are opened on a loaded machine.
        .args(["--header-timeout", "10s"])
        .start()
        .await;

    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => idle.push(s),
            Err(e) => agent.fail(format_args!("connection {i} was not even queued: {e}")),
        }
    }
    // While they are all open: the ops port answers, and the surplus was refused by budget
    // (512 by default), not by running out of descriptors.
    assert_eq!(agent.ops_status("/healthz").await, 200);
    let listener = [("listener", &*format!("webhook:{port}"))];
    let refused = agent
        .wait_for_metric(
            "triggerd_http_connections_refused_total",
            &listener,
            (IDLE - 512) as f64,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert!(refused >= (IDLE - 512) as f64, "{refused}");
    assert_eq!(agent.ops_status("/healthz").await, 200);

    // The header timeout closes the idle connections; the webhook then takes an event.
    let url = agent.webhook_url(port, "/push");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = agent
            .http()
            .post(&url)
            .json(&serde_json::json!({"after": "idle"}))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if matches!(status, Ok(200)) {
            break;
        }
        if Instant::now() > deadline {
            agent.fail(format_args!(
                "the webhook did not take an event after the idle connections: {status:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stderr = agent.stderr();
    assert!(
        !stderr.contains("cannot accept a connection"),
        "the agent ran out of file descriptors:\n{stderr}"
    );
    drop(idle);
}
