//! The runtime calls of the API (InstallRuntime, ListRuntimes, RemoveRuntime): requests into the
//! supervisor's runtime store (`supervise::runtimes`), its answers into messages.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status as GrpcStatus;

use super::v1;
use crate::runtime::{InstallError, Runtime, Spec};
use crate::supervise::{runtimes::RemoveError, Supervisor};

/// The spec of a request, or INVALID_ARGUMENT.
pub fn spec(text: &str) -> Result<Spec, GrpcStatus> {
    Spec::parse(text).map_err(GrpcStatus::invalid_argument)
}

/// A runtime as a message.
pub fn info(r: &Runtime, used_by: Vec<String>) -> v1::RuntimeInfo {
    v1::RuntimeInfo {
        id: r.id(),
        openclaw: r.openclaw.clone(),
        node: r.node.clone(),
        dir: r.dir.display().to_string(),
        used_by,
    }
}

/// Feeds an InstallRuntime stream: each progress line as it comes, then the runtime, or the
/// error's status.
pub async fn install(
    sup: Arc<Supervisor>,
    spec: Spec,
    tx: mpsc::Sender<Result<v1::InstallRuntimeProgress, GrpcStatus>>,
) {
    let (lines, mut feed) = mpsc::unbounded_channel::<String>();
    let work = {
        let sup = sup.clone();
        tokio::spawn(async move { sup.install_runtime(&spec, lines).await })
    };
    // The install goes on if the client leaves (it holds the store's lock; a half install would
    // only be cleaned up by the next one): only the sending stops.
    let mut listening = true;
    while let Some(line) = feed.recv().await {
        if listening {
            let msg = v1::InstallRuntimeProgress {
                line,
                runtime: None,
            };
            listening = tx.send(Ok(msg)).await.is_ok();
        }
    }
    let last = match work.await {
        Ok(Ok(r)) => {
            let used = users_of(&sup, &r).await;
            Ok(v1::InstallRuntimeProgress {
                line: String::new(),
                runtime: Some(info(&r, used)),
            })
        }
        Ok(Err(InstallError::Unreachable(why))) => Err(GrpcStatus::unavailable(why)),
        Ok(Err(InstallError::Failed(why))) => Err(GrpcStatus::failed_precondition(why)),
        Err(e) => Err(GrpcStatus::internal(format!(
            "the install's task failed: {e}"
        ))),
    };
    let _ = tx.send(last).await;
}

/// The instances that use `r`.
async fn users_of(sup: &Arc<Supervisor>, r: &Runtime) -> Vec<String> {
    let (sup, r) = (sup.clone(), r.clone());
    tokio::task::spawn_blocking(move || {
        sup.runtime_users(std::slice::from_ref(&r))
            .remove(&r.id())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

/// ListRuntimes.
pub async fn list(sup: Arc<Supervisor>) -> Result<v1::ListRuntimesResponse, GrpcStatus> {
    tokio::task::spawn_blocking(move || {
        let installed = sup.runtime_store().list();
        let mut users = sup.runtime_users(&installed);
        v1::ListRuntimesResponse {
            runtimes: installed
                .iter()
                .map(|r| info(r, users.remove(&r.id()).unwrap_or_default()))
                .collect(),
            store: sup.runtime_store().root().display().to_string(),
        }
    })
    .await
    .map_err(|e| GrpcStatus::internal(e.to_string()))
}

/// RemoveRuntime.
pub async fn remove(
    sup: &Arc<Supervisor>,
    spec: &Spec,
) -> Result<v1::RemoveRuntimeResponse, GrpcStatus> {
    match sup.remove_runtime(spec).await {
        Ok(r) => Ok(v1::RemoveRuntimeResponse {
            runtime: Some(info(&r, Vec::new())),
        }),
        Err(e @ RemoveError::NotInstalled(_)) => Err(GrpcStatus::not_found(e.to_string())),
        Err(e @ RemoveError::InUse { .. }) => Err(GrpcStatus::failed_precondition(e.to_string())),
        Err(e @ RemoveError::Failed(_)) => Err(GrpcStatus::internal(e.to_string())),
    }
}
