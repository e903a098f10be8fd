//! The central API over TCP with mutual TLS, against a real agent: roles
//! from the certificate over every route of the route table, refused
//! handshakes (no certificate, another CA, expired, revoked), a CRL added
//! on SIGHUP while an open connection keeps working, PUT retries, audit
//! lines, hydractl --host, and the connection limits.

mod common;
#[path = "api_tls/netns.rs"]
mod netns;
#[path = "api_tls/pki.rs"]
mod pki;

use common::*;
use hydra_agent::api::client::{Client, ClientError};
use hydra_agent::api::routes::{Scope, ROUTES};
use hydra_agent::api::Request;
use netns::run_in;
use pki::{Ident, Pki};
use std::sync::Arc;

const ADDR: &str = "127.0.0.1:7443";
const URL: &str = "https://127.0.0.1:7443";

fn tls_client(pki: &Pki, id: &Ident) -> Client {
    let cfg = hydra_agent::api::tls::client_config(&pki.ca, &id.cert, &id.key).unwrap();
    Client::tls(URL, cfg).unwrap()
}

fn hup(a: &Agent) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.agent_pid()),
        nix::sys::signal::SIGHUP,
    )
    .unwrap();
}

/// A TLS 1.2-only client with `id`'s certificate.
fn tls12_client(pki: &Pki, id: &Ident) -> Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_file_iter(&id.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(&id.key).unwrap())
    .unwrap();
    Client::tls(URL, Arc::new(cfg)).unwrap()
}

/// A client presenting no certificate.
fn anonymous(pki: &Pki) -> Client {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Client::tls(URL, Arc::new(cfg)).unwrap()
}

async fn start(extra: &str) -> (Agent, Pki, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let a = Agent::start(&format!("{}{extra}", pki.api_config(ADDR, None))).await;
    (a, pki, dir)
}

/// The status of `GET /v1/host` with `c`, or the error text when the
/// connection is refused.
async fn host_status(a: &Agent, c: Client) -> Result<u16, String> {
    run_in(a.host.netns(), move || async move {
        let mut s = c.session().await.map_err(|e| e.to_string())?;
        s.status("GET", "/v1/host", None)
            .await
            .map(|(st, _)| st)
            .map_err(|e| format!("{e} ({e:?})"))
    })
    .await
}

/// Each route's request body for the role table: harmless when allowed
/// (the container and image do not exist; the allowlist stays empty).
fn body_for(id: &str) -> Option<Vec<u8>> {
    let b: &[u8] = match id {
        "create" | "put" => br#"{"name":"nosuch","image":"rootfs:/nonexistent"}"#,
        "set_allowlist" => br#"{"cidrs":[]}"#,
        "edit_allowlist" => br#"{"add":[],"remove":[]}"#,
        "pull" => br#"{"image":"127.0.0.1:1/nosuch:1"}"#,
        _ => return None,
    };
    Some(b.to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_each_role_exactly_as_its_scope_says() {
    require_root!();
    let (a, pki, _d) = start("").await;
    let roles = [
        ("admin", pki.admin.clone()),
        ("operator", pki.operator.clone()),
        ("observer", pki.observer.clone()),
        ("none", pki.norole.clone()),
    ];
    let mut table = Vec::new();
    for route in ROUTES {
        for (role, id) in &roles {
            let c = tls_client(&pki, id);
            let (method, path, body) = (
                route.method,
                route.example_path("nosuch"),
                body_for(route.id),
            );
            let (status, text) = run_in(a.host.netns(), move || async move {
                let mut s = c.session().await.unwrap();
                if route.id == "events" {
                    // an endless stream: its status is enough
                    let (st, b) = s.status(method, &path, body).await.unwrap();
                    return (st, String::from_utf8_lossy(&b).into_owned());
                }
                let (st, b) = s.raw(method, &path, body).await.unwrap();
                (st, String::from_utf8_lossy(&b).into_owned())
            })
            .await;
            let allowed = match *role {
                "admin" | "operator" => true,
                "observer" => route.scope == Scope::Read,
                _ => false,
            };
            let role_refusal = status == 403 && text.contains(r#""field":"role""#);
            table.push(format!(
                "{:6} {:28} {role:8} -> {status}",
                route.method, route.path
            ));
            assert_eq!(
                !allowed, role_refusal,
                "{} {} as {role}: {status} {text}",
                route.method, route.path
            );
        }
    }
    eprintln!("{}", table.join("\n"));
    // odd spellings of a path are judged on what they parse to
    for (m, p) in [
        ("POST", "/v1/containers//kill"),
        ("POST", "/v1/containers/nosuch/stop/"),
        ("DELETE", "/v1/containers/nosuch?force=true"),
        ("POST", "/v1/images//prune"),
    ] {
        let c = tls_client(&pki, &pki.observer);
        let (st, body) = run_in(a.host.netns(), move || async move {
            c.raw(m, p, None).await.unwrap()
        })
        .await;
        let text = String::from_utf8_lossy(&body);
        assert!(
            st == 404 || (st == 403 && text.contains(r#""field":"role""#)),
            "{m} {p} as observer: {st} {text}"
        );
        assert!(st != 200 && st != 204, "{m} {p}");
    }
    // the CN "admin" of the role-less certificate gave it nothing, and the
    // refusals were audited with the subject
    assert!(a.log().contains("CN=admin"), "{}", a.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn handshakes_without_a_valid_certificate_are_refused() {
    require_root!();
    let (a, pki, _d) = start("").await;
    assert_eq!(host_status(&a, tls_client(&pki, &pki.admin)).await, Ok(200));
    for (what, c) in [
        ("no certificate", anonymous(&pki)),
        ("another CA's", tls_client(&pki, &pki.foreign)),
        ("an expired one", tls_client(&pki, &pki.expired)),
    ] {
        let r = host_status(&a, c).await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // the role-less certificate connects, and is refused everything
    assert_eq!(
        host_status(&a, tls_client(&pki, &pki.norole)).await,
        Ok(403)
    );
    // TLS 1.2 is allowed
    assert_eq!(
        host_status(&a, tls12_client(&pki, &pki.admin)).await,
        Ok(200)
    );
    let log = a.log();
    assert!(log.contains("TLS handshake refused"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crl_added_on_sighup_refuses_the_revoked_client_while_open_connections_go_on() {
    require_root!();
    let (a, pki, _d) = start("").await;
    assert_eq!(
        host_status(&a, tls_client(&pki, &pki.revoked)).await,
        Ok(200)
    );

    // an observer, and the client about to be revoked, keep a connection
    // open across the reload
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<Vec<u16>>(1);
    let (obs, rev) = (
        tls_client(&pki, &pki.observer),
        tls_client(&pki, &pki.revoked),
    );
    let ns = a.host.netns();
    let kept = tokio::task::spawn_blocking(move || {
        netns::block_in(ns, move || async move {
            let mut s = obs.session().await.unwrap();
            let mut r = rev.session().await.unwrap();
            let mut seen = vec![
                s.status("GET", "/v1/host", None).await.unwrap().0,
                r.status("GET", "/v1/host", None).await.unwrap().0,
            ];
            done_tx.send(seen.clone()).await.unwrap();
            rx.recv().await;
            seen.push(s.status("GET", "/v1/host", None).await.unwrap().0);
            // the revoked client's open connection is refused from now on
            let (st, body) = r.status("GET", "/v1/host", None).await.unwrap();
            assert!(String::from_utf8_lossy(&body).contains(r#""field":"certificate""#));
            seen.push(st);
            done_tx.send(seen).await.unwrap();
        })
    });
    assert_eq!(done.recv().await.unwrap(), vec![200, 200]);

    std::fs::write(
        &a.config,
        format!(
            "[cgroup]\nparent = \"{}\"\n{}",
            a.parent,
            pki.api_config(ADDR, Some(&pki.crl))
        ),
    )
    .unwrap();
    hup(&a);
    let (agent, p2) = (&a, &pki);
    eventually(20, "the revoked certificate is refused", async || {
        host_status(agent, tls_client(p2, &p2.revoked))
            .await
            .is_err()
    })
    .await;
    let refused = host_status(&a, tls_client(&pki, &pki.revoked))
        .await
        .unwrap_err();
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
    // others connect as before, and the observer's open connection goes on
    assert_eq!(host_status(&a, tls_client(&pki, &pki.admin)).await, Ok(200));
    tx.send(()).await.unwrap();
    assert_eq!(done.recv().await.unwrap(), vec![200, 200, 200, 403]);
    kept.await.unwrap();

    // a CRL file that cannot be read on the next SIGHUP keeps the last good one
    std::fs::write(&pki.crl, "not a CRL").unwrap();
    hup(&a);
    eventually(20, "the bad CRL is reported", async || {
        agent.log().contains("api.crl")
    })
    .await;
    assert!(host_status(&a, tls_client(&pki, &pki.revoked))
        .await
        .is_err());
    assert_eq!(host_status(&a, tls_client(&pki, &pki.admin)).await, Ok(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn put_retried_ten_times_at_once_makes_one_container_and_is_audited() {
    require_root!();
    let (a, pki, _d) = start("").await;
    let spec = serde_json::json!({"name": "web", "image": busybox(), "command": ["sleep", "100000"],
                                  "limits": {"memory": "32Mi"}});
    let body = serde_json::to_vec(&spec).unwrap();
    let c = tls_client(&pki, &pki.operator);
    let statuses = run_in(a.host.netns(), move || async move {
        let puts = (0..10).map(|_| {
            let (c, body) = (c.clone(), body.clone());
            async move {
                c.raw("PUT", "/v1/containers/web", Some(body))
                    .await
                    .unwrap()
            }
        });
        futures_util::future::join_all(puts).await
    })
    .await;
    let mut codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    codes.sort();
    assert_eq!(
        codes,
        [200, 200, 200, 200, 200, 200, 200, 200, 200, 201],
        "{statuses:?}"
    );
    let ids: std::collections::BTreeSet<String> = statuses
        .iter()
        .map(|(_, b)| {
            let v = serde_json::from_slice::<serde_json::Value>(b).unwrap();
            format!("{} {}", v["pid"], v["created_at"])
        })
        .collect();
    assert_eq!(ids.len(), 1, "one container: {ids:?}");
    let list = a.client.list().await.unwrap();
    assert_eq!(list.iter().filter(|c| c.name == "web").count(), 1);

    // a different spec: 409 naming spec; a body naming another container: 400 naming name
    let c = tls_client(&pki, &pki.operator);
    let (mut other, mismatch) = (
        spec.clone(),
        serde_json::json!({"name": "db", "image": busybox()}),
    );
    other["limits"]["memory"] = "64Mi".into();
    let (r1, r2) = run_in(a.host.netns(), move || async move {
        let r1 = c
            .send::<serde_json::Value>(&Request::Put(Box::new(
                serde_json::from_value(other).unwrap(),
            )))
            .await;
        let r2 = c
            .raw(
                "PUT",
                "/v1/containers/web",
                Some(serde_json::to_vec(&mismatch).unwrap()),
            )
            .await
            .unwrap();
        (r1, r2)
    })
    .await;
    match r1 {
        Err(ClientError::Api { status: 409, body }) => {
            assert_eq!(body.error.field.as_deref(), Some("spec"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r2.0, 400, "{}", String::from_utf8_lossy(&r2.1));
    assert!(String::from_utf8_lossy(&r2.1).contains(r#""field":"name""#));

    // each PUT was audited once, with the subject, role, route and status
    let log = a.log();
    let audits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("audit") && l.contains("/v1/containers/{name}"))
        .collect();
    assert_eq!(audits.len(), 12, "{log}");
    assert!(
        audits
            .iter()
            .all(|l| l.contains("CN=deployer") && l.contains("role=\"operator\"")),
        "{audits:?}"
    );
    assert_eq!(
        audits.iter().filter(|l| l.contains("status=201")).count(),
        1,
        "{audits:?}"
    );
    a.client
        .send::<serde_json::Value>(&Request::Remove {
            name: "web".into(),
            force: true,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_server_certificate_and_client_ca_are_taken_on_sighup() {
    require_root!();
    let (a, old, _d) = start("").await;
    let dir = tempfile::tempdir().unwrap();
    let new = Pki::new(dir.path());
    assert_eq!(host_status(&a, tls_client(&old, &old.admin)).await, Ok(200));
    assert!(host_status(&a, tls_client(&new, &new.admin)).await.is_err());
    // the platform rotates to a new CA: the agent's certificate and the
    // clients' CA change together
    std::fs::write(
        &a.config,
        format!(
            "[cgroup]\nparent = \"{}\"\n{}",
            a.parent,
            new.api_config(ADDR, None)
        ),
    )
    .unwrap();
    hup(&a);
    let agent = &a;
    let n = &new;
    eventually(20, "the new CA's client is served", async || {
        host_status(agent, tls_client(n, &n.admin)).await == Ok(200)
    })
    .await;
    // the old client no longer trusts the agent, nor the agent it
    assert!(host_status(&a, tls_client(&old, &old.admin)).await.is_err());
    assert!(a.log().contains("api TLS files"), "{}", a.log());
}
