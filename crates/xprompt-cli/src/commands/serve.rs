//! `xprompt serve`: the HTTP API and web page (crate xprompt-serve).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use xprompt_serve::{Limits, ServeConfig, WeightsChoice};

use super::generate::DEFAULT_MODEL;

#[derive(Args)]
pub struct ServeArgs {
    /// Model directory (repeatable; the first is the default, ids are the directory names).
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// Example database for retrieval-augmented requests (`raie`).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Address to listen on (loopback by default; 0.0.0.0:PORT to serve the network).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on the API (default: $XPROMPT_TOKEN when set).
    #[arg(long, env = "XPROMPT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Sequences decoded together in one forward step (1 = one request at a time).
    #[arg(long, default_value_t = Limits::default().max_batch)]
    pub max_batch: usize,
    /// Requests accepted but unfinished before new ones get 429.
    #[arg(long, default_value_t = Limits::default().max_pending)]
    pub max_pending: usize,
    /// Compiled tasks kept in memory (least recently used evicted).
    #[arg(long, default_value_t = Limits::default().max_tasks)]
    pub max_tasks: usize,
    /// Seconds running jobs get to finish on SIGTERM before they are cancelled.
    #[arg(long, default_value_t = Limits::default().shutdown_grace_s)]
    pub shutdown_grace: u64,
    /// Weight matrices in memory: auto (half checkpoints stay half), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    pub weights: WeightsChoice,
    /// Where the decoder runs: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: xprompt_core::device::DeviceChoice,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = Limits::default().max_body_bytes >> 20)]
    pub max_body_mib: usize,
}

pub fn run(a: ServeArgs) -> Result<()> {
    for (flag, v) in [
        ("--max-batch", a.max_batch),
        ("--max-pending", a.max_pending),
        ("--max-tasks", a.max_tasks),
        ("--max-body-mib", a.max_body_mib),
    ] {
        if v == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    if a.max_body_mib > 1024 {
        bail!(
            "--max-body-mib {} is above the 1024 MiB this server allows",
            a.max_body_mib
        );
    }
    if a.token.as_deref() == Some("") {
        bail!("--token is empty");
    }
    let models = if a.models.is_empty() {
        vec![PathBuf::from(DEFAULT_MODEL)]
    } else {
        a.models
    };
    let limits = Limits {
        max_batch: a.max_batch,
        max_pending: a.max_pending,
        max_tasks: a.max_tasks,
        shutdown_grace_s: a.shutdown_grace,
        max_body_bytes: a.max_body_mib << 20,
        ..Limits::default()
    };
    xprompt_serve::run(ServeConfig {
        models,
        db: a.db,
        addr: a.addr,
        token: a.token,
        limits,
        weights: a.weights,
        device: a.device,
    })?;
    Ok(())
}
