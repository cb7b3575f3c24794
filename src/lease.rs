//! The lease a run holds on its output, so two runs never publish into one another.
//!
//! `_c360_lease.json` beside the tables is created only if absent (a conditional put, atomic
//! on the local disk and on S3), renewed while the run lives and removed when it ends. A
//! second run finding it fails with a "concurrent run" error naming the holder. A lease
//! its holder stopped renewing (killed, or cut off from the store) expires and is taken
//! over; on the same host a holder whose process is gone is known dead at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The lease file's name under the output.
pub const LEASE_FILE: &str = "_c360_lease.json";

/// Who holds the output.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Holder {
    run_id: String,
    host: String,
    pid: u32,
    started_at: String,
    /// Unix seconds of the last renewal.
    renewed_at: i64,
    lease_s: u64,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "run {} (pid {} on {}, started {}, renewed {} s ago)",
            self.run_id,
            self.pid,
            self.host,
            self.started_at,
            (now() - self.renewed_at).max(0)
        )
    }

    fn expired(&self) -> bool {
        if self.renewed_at + self.lease_s as i64 <= now() {
            return true;
        }
        // Same host: a holder whose process is gone was killed.
        self.host == host() && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A held lease; renewed in the background until [`Lease::release`].
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
    run_id: String,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease at `path` (shown as `location`) for `run_id`, or fails with
    /// [`Error::Concurrent`] if a live run holds it.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        path: Path,
        location: String,
        run_id: &str,
        lease: Duration,
    ) -> Result<Self> {
        let mut holder = Holder {
            run_id: run_id.to_string(),
            host: host(),
            pid: std::process::id(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            renewed_at: now(),
            lease_s: lease.as_secs().max(1),
        };
        let failed = |e: &dyn std::fmt::Display| {
            Error::output(&location, format!("taking the run lease failed: {e}"))
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let body = PutPayload::from(serde_json::to_vec(&holder)?);
            let create = PutOptions::from(PutMode::Create);
            match store.put_opts(&path, body, create).await {
                Ok(_) => break,
                Err(object_store::Error::AlreadyExists { .. }) if attempts < 3 => {
                    match read(&*store, &path).await.map_err(|e| failed(&e))? {
                        // Released meanwhile: try again.
                        None => continue,
                        Some(current) if current.expired() => match store.delete(&path).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => continue,
                            Err(e) => return Err(failed(&e)),
                        },
                        Some(current) => {
                            return Err(Error::Concurrent {
                                location,
                                holder: current.describe(),
                            })
                        }
                    }
                }
                Err(e) => return Err(failed(&e)),
            }
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (store, path, lost) = (store.clone(), path.clone(), lost.clone());
            tokio::spawn(async move {
                let every = Duration::from_secs((holder.lease_s / 3).max(1));
                let mut last_renewal = holder.renewed_at;
                loop {
                    tokio::time::sleep(every).await;
                    let ours = match read(&*store, &path).await {
                        Ok(Some(current)) => current.run_id == holder.run_id,
                        Ok(None) => false,
                        // Unreachable store: the lease may lapse; count on the next try.
                        Err(_) => true,
                    };
                    holder.renewed_at = now();
                    let body = PutPayload::from(serde_json::to_vec(&holder).unwrap_or_default());
                    let renewed = ours && store.put(&path, body).await.is_ok();
                    if renewed {
                        last_renewal = holder.renewed_at;
                    }
                    if !ours || now() - last_renewal >= holder.lease_s as i64 {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        Ok(Self {
            store,
            path,
            location,
            run_id: run_id.to_string(),
            lost,
            renewer,
        })
    }

    /// Fails if the lease lapsed or was taken over: publishing now could mix two runs.
    pub async fn check(&self) -> Result<()> {
        let current = read(&*self.store, &self.path)
            .await
            .map_err(|e| Error::output(&self.location, format!("checking the run lease: {e}")))?;
        match current {
            Some(h) if h.run_id == self.run_id && !self.lost.load(Ordering::SeqCst) => Ok(()),
            Some(h) => Err(Error::Concurrent {
                location: self.location.clone(),
                holder: h.describe(),
            }),
            None => Err(Error::Concurrent {
                location: self.location.clone(),
                holder: "no one (the lease was removed while this run held it)".into(),
            }),
        }
    }

    /// Gives the lease up, if it is still this run's.
    pub async fn release(self) -> Result<()> {
        self.renewer.abort();
        if let Ok(Some(h)) = read(&*self.store, &self.path).await {
            if h.run_id == self.run_id {
                self.store.delete(&self.path).await.map_err(|e| {
                    Error::output(&self.location, format!("releasing the run lease: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

/// The holder recorded at `path`, if any. An unreadable lease file counts as expired: it
/// can only be a write cut short.
async fn read(store: &dyn ObjectStore, path: &Path) -> object_store::Result<Option<Holder>> {
    match store.get(path).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            Ok(Some(serde_json::from_slice(&bytes).unwrap_or_default()))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
