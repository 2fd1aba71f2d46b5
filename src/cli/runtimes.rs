//! `openclawctl runtime install|list|remove`: the daemon's runtime store, over the API
//! (`api::runtimes`). The daemon runs npm, so an install works for the daemon's user too.

use super::remote::{connect, Error, Target};
use crate::api::v1;

/// `runtime install SPEC`: the installer's progress on stderr as it comes, then the runtime's id
/// and directory on stdout.
pub async fn install(target: &Target, runtime: String) -> Result<(), Error> {
    let mut stream = connect(target)
        .await?
        .install_runtime(v1::InstallRuntimeRequest { runtime })
        .await?
        .into_inner();
    while let Some(p) = stream.message().await? {
        if !p.line.is_empty() {
            eprintln!("{}", p.line);
        }
        if let Some(r) = p.runtime {
            println!("{}  {}", r.id, r.dir);
        }
    }
    Ok(())
}

/// The runtime store of the daemon at `target`, if one answers.
pub async fn daemon_store(target: &Target) -> Option<std::path::PathBuf> {
    let r = connect(target)
        .await
        .ok()?
        .list_runtimes(v1::ListRuntimesRequest {})
        .await
        .ok()?
        .into_inner();
    (!r.store.is_empty()).then(|| std::path::PathBuf::from(r.store))
}

/// `runtime list [--json]`.
pub async fn list(target: &Target, json: bool) -> Result<(), Error> {
    let r = connect(target)
        .await?
        .list_runtimes(v1::ListRuntimesRequest {})
        .await?
        .into_inner();
    print!("{}", list_text(&r, json));
    Ok(())
}

/// What `runtime list` prints: a table (RUNTIME, OPENCLAW, NODE, USED BY) and the store's path,
/// or one JSON array of {id, openclaw, node, dir, used_by}.
pub fn list_text(r: &v1::ListRuntimesResponse, json: bool) -> String {
    if json {
        let v: Vec<serde_json::Value> = r
            .runtimes
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "openclaw": r.openclaw, "node": r.node, "dir": r.dir,
                    "used_by": r.used_by,
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    if r.runtimes.is_empty() {
        return format!(
            "no runtime installed in {} (openclawctl runtime install openclaw@VERSION)\n",
            r.store
        );
    }
    let mut rows = vec![["RUNTIME", "OPENCLAW", "NODE", "USED BY"].map(String::from)];
    for rt in &r.runtimes {
        rows.push([
            rt.id.clone(),
            rt.openclaw.clone(),
            rt.node.clone(),
            if rt.used_by.is_empty() {
                "-".to_string()
            } else {
                rt.used_by.join(",")
            },
        ]);
    }
    super::align(&rows, "")
}

/// `runtime remove SPEC`: refused (exit 1, with the reason) while instances use it.
pub async fn remove(target: &Target, runtime: String) -> Result<(), Error> {
    let r = connect(target)
        .await?
        .remove_runtime(v1::RemoveRuntimeRequest { runtime })
        .await?
        .into_inner();
    if let Some(r) = r.runtime {
        println!("removed {} ({})", r.id, r.dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_each_runtime_and_its_users() {
        let info = |id: &str, users: &[&str]| v1::RuntimeInfo {
            id: id.into(),
            openclaw: "2026.9.6".into(),
            node: "24.21.0".into(),
            dir: format!("/s/{id}"),
            used_by: users.iter().map(|u| u.to_string()).collect(),
        };
        let r = v1::ListRuntimesResponse {
            runtimes: vec![
                info("openclaw@2026.9.6+node@24.21.0", &["main", "rescue"]),
                info("openclaw@2026.9.7+node@24.21.0", &[]),
            ],
            store: "/s".into(),
        };
        let text = list_text(&r, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "RUNTIME                         OPENCLAW  NODE     USED BY"
        );
        assert!(lines[1].ends_with("main,rescue"), "{text}");
        assert!(lines[2].ends_with(" -"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&list_text(&r, true)).unwrap();
        assert_eq!(v[0]["used_by"][1], "rescue");
        let empty = v1::ListRuntimesResponse {
            runtimes: vec![],
            store: "/s".into(),
        };
        assert!(list_text(&empty, false).contains("no runtime installed in /s"));
    }
}
