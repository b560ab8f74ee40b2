//! `meshgate demo`: the seed scenario end to end on one machine.
//!
//! An in-process stand-in for `api.external.com` serves HTTPS with a
//! certificate from a fresh dev CA; meshgate loads the ServiceEntry and
//! SIMPLE DestinationRule from `examples/demo/egress.yaml.tmpl`; a plain-HTTP
//! request, as the app would send it, goes through meshgate and comes back
//! with what the external service saw on the wire.
//!
//! Built with the `demo` feature (on by default), as are the stand-in
//! service and the dev PKI it uses. `meshgate demo --transparent` is
//! [`transparent`]: the same scenario with the app's traffic captured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bootstrap::Bootstrap;
use crate::devpki::{DevCa, LeafSpec};
use crate::load::LoadErrors;
use crate::plan::Decision;
use crate::standin::{StandIn, StandInConfig, StandInError, fetch};

pub mod transparent;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The demo directory cannot be created.
    #[error("{}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A config or certificate file cannot be written.
    #[error("{source}")]
    Write {
        /// The file (for a certificate and key pair: the stem).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The stand-in external service, or a client request, failed.
    #[error(transparent)]
    StandIn(#[from] StandInError),
    /// The local echo service cannot listen.
    #[error("local service: {0}")]
    LocalService(#[source] std::io::Error),
    /// The demo configuration does not load.
    #[error(transparent)]
    Load(#[from] LoadErrors),
    /// The demo configuration does not route `api.external.com:80`.
    #[error("the demo configuration does not register api.external.com:80")]
    NotRegistered,
    /// The proxy cannot start (usually: a port is taken).
    #[error("{0} (try --outbound-addr 127.0.0.1:0)")]
    Start(#[source] std::io::Error),
    /// The request through the outbound listener did not get a 200.
    #[error("request through meshgate failed: {status} {body}")]
    Outbound {
        /// The status.
        status: u16,
        /// The body, trimmed.
        body: String,
    },
    /// The stand-in saw no TLS connection.
    #[error("the external service saw no TLS connection")]
    NoUpstreamTls,
    /// The proxy has no listener for the demo Gateway's port 443.
    #[error("no ingress listener")]
    NoIngress,
    /// The request through the ingress did not get a 200.
    #[error("request through the ingress failed: {status} {body}")]
    Ingress {
        /// The status.
        status: u16,
        /// The body, trimmed.
        body: String,
    },
    /// The local service's echo is not JSON.
    #[error(transparent)]
    Echo(#[from] serde_json::Error),
}

/// Wraps an OS error about writing `path`.
fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The demo's egress resources, with `${STANDIN_PORT}` and `${CA_FILE}`.
pub const DEMO_YAML: &str = include_str!("../examples/demo/egress.yaml.tmpl");

/// The demo's ingress resources, with `${SERVER_CERT}`, `${SERVER_KEY}`,
/// `${CA_FILE}` and `${APP_PORT}`.
pub const DEMO_INGRESS_YAML: &str = include_str!("../examples/demo/ingress.yaml.tmpl");

/// The external host of the seed scenario.
pub const HOST: &str = "api.external.com";

/// The internal host external clients call.
pub const INGRESS_HOST: &str = "service.internal.com";

/// Runs the demo. With `once`, exits after the requests; otherwise stays up
/// until Ctrl-C so the printed curl commands can be tried.
pub async fn run(
    outbound_addr: SocketAddr,
    ingress_addr: SocketAddr,
    once: bool,
) -> Result<(), DemoError> {
    let dir = std::env::temp_dir().join(format!("meshgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Dir {
        path: dir.clone(),
        source,
    })?;
    // The directory holds private keys: removed however the demo ends.
    let _remove = RemoveOnDrop(dir.clone());
    let ca = DevCa::new("meshgate demo CA");
    let ca_file = ca
        .write_cert(&dir, "ca.crt")
        .map_err(write_error(&dir.join("ca.crt")))?;
    let leaf = ca.issue(&LeafSpec::server(&[HOST]));
    let external = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await?;

    let yaml = DEMO_YAML
        .replace("${STANDIN_PORT}", &external.addr.port().to_string())
        .replace("${CA_FILE}", &ca_file.display().to_string());
    let config_file = dir.join("egress.yaml");
    std::fs::write(&config_file, &yaml).map_err(write_error(&config_file))?;

    // The termination half: the local app, and the certificates of the
    // sidecar's server and of an external client, all from the dev CA.
    let app = crate::standin::start_echo_service(([127, 0, 0, 1], 0).into())
        .await
        .map_err(DemoError::LocalService)?;
    let (server_cert, server_key) = ca
        .issue(&LeafSpec::server(&[INGRESS_HOST]))
        .write(&dir, "server")
        .map_err(write_error(&dir.join("server")))?;
    let client = ca.issue(&LeafSpec::client("external-client.example.org"));
    let (client_cert, client_key) = client
        .write(&dir, "client")
        .map_err(write_error(&dir.join("client")))?;
    let ingress_yaml = DEMO_INGRESS_YAML
        .replace("${SERVER_CERT}", &server_cert.display().to_string())
        .replace("${SERVER_KEY}", &server_key.display().to_string())
        .replace("${CA_FILE}", &ca_file.display().to_string())
        .replace("${APP_PORT}", &app.port().to_string());
    let ingress_file = dir.join("ingress.yaml");
    std::fs::write(&ingress_file, &ingress_yaml).map_err(write_error(&ingress_file))?;

    let mut bootstrap = Bootstrap {
        config_paths: vec![config_file.clone(), ingress_file.clone()],
        outbound_addr,
        // One worker: the demo's requests share its upstream pool.
        concurrency: 1,
        ..Bootstrap::ephemeral()
    };
    bootstrap.port_map.insert(443, ingress_addr);
    let loaded = crate::load::load(&bootstrap)?;
    let Decision::Registered(target) = loaded.plan.outbound.route(HOST, 80, 0) else {
        return Err(DemoError::NotRegistered);
    };
    let proxy = crate::app::build(bootstrap, loaded)
        .await
        .map_err(DemoError::Start)?;

    println!("meshgate demo: TLS origination and termination for the seed scenario\n");
    println!(
        "  config            {} {}",
        config_file.display(),
        ingress_file.display()
    );
    println!(
        "  external service  https://{HOST} (stand-in on {}, cert from a fresh dev CA)",
        external.addr
    );
    println!(
        "  meshgate          outbound {} · admin http://{}/config_dump · metrics http://{}/stats/prometheus\n",
        proxy.outbound, proxy.admin, proxy.stats
    );
    println!("app → GET http://{HOST}/v1/items (plain HTTP, to the sidecar)");

    let start = Instant::now();
    let resp = fetch(proxy.outbound, "GET", "/v1/items", Some(HOST)).await?;
    let latency = start.elapsed();
    if resp.status != 200 {
        return Err(DemoError::Outbound {
            status: resp.status,
            body: resp.body.trim().to_string(),
        });
    }
    let seen = external.last().ok_or(DemoError::NoUpstreamTls)?;
    println!(
        "  ← {} in {:.1} ms, relayed over TLS:",
        resp.status,
        latency.as_secs_f64() * 1000.0
    );
    println!("     TLS version     {}", seen.version);
    println!("     cipher suite    {}", seen.cipher);
    println!("     key exchange    {}", seen.group);
    println!(
        "     SNI             {}",
        seen.sni.as_deref().unwrap_or("(none)")
    );
    println!(
        "     verified name   {} (chain checked against {})",
        target.verify_names().join(", "),
        ca_file.display()
    );
    println!(
        "     via             {} → {}",
        target.service.resource,
        target.rule.as_deref().unwrap_or("-")
    );
    println!("     body            {}", resp.body.trim());

    let start = Instant::now();
    let again = fetch(proxy.outbound, "GET", "/v1/items?page=2", Some(HOST)).await?;
    println!(
        "  second request: {} in {:.1} ms, upstream TLS handshakes so far: {} (pooled connection reused)\n",
        again.status,
        start.elapsed().as_secs_f64() * 1000.0,
        external.handshakes()
    );
    let ingress = proxy
        .inbound()
        .get(&443)
        .copied()
        .ok_or(DemoError::NoIngress)?;
    println!(
        "external client (cert CN=external-client.example.org) → GET https://{INGRESS_HOST}/orders → meshgate {ingress} (MUTUAL) → app {app}"
    );
    let opts = crate::standin::ClientOpts {
        sni: Some(INGRESS_HOST.into()),
        ca_pem: ca.cert_pem.clone(),
        identity: Some((client.cert_pem.clone(), client.key_pem.clone())),
        ..Default::default()
    };
    let start = Instant::now();
    let tls = crate::standin::tls_connect(ingress, &opts).await?;
    let (version, cipher, group) = {
        let (_, c) = tls.get_ref();
        (
            c.protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            c.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            c.negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
                .unwrap_or_default(),
        )
    };
    let mut conn = crate::standin::HttpsConn::new(tls, false).await?;
    let r = conn.get(INGRESS_HOST, "/orders", &[]).await?;
    let latency = start.elapsed();
    if r.status != 200 {
        return Err(DemoError::Ingress {
            status: r.status,
            body: r.body.trim().to_string(),
        });
    }
    let seen: serde_json::Value = serde_json::from_str(&r.body)?;
    let header = |h: &str| {
        seen["headers"][h]
            .as_str()
            .unwrap_or("(absent)")
            .to_string()
    };
    println!(
        "  ← {} in {:.1} ms (handshake included), terminated by meshgate:",
        r.status,
        latency.as_secs_f64() * 1000.0
    );
    println!("     TLS version     {version}");
    println!("     cipher suite    {cipher}");
    println!("     key exchange    {group}");
    println!("     SNI             {INGRESS_HOST}");
    println!(
        "     client cert     verified against {}",
        ca_file.display()
    );
    println!(
        "  the app received plain {} {} with:",
        seen["version"].as_str().unwrap_or("HTTP"),
        seen["path"].as_str().unwrap_or("")
    );
    println!(
        "     x-forwarded-proto        {}",
        header("x-forwarded-proto")
    );
    println!(
        "     x-forwarded-for          {}",
        header("x-forwarded-for")
    );
    println!(
        "     x-forwarded-client-cert  {}",
        header("x-forwarded-client-cert")
    );
    let unauth = crate::standin::https_get(
        ingress,
        &crate::standin::ClientOpts {
            identity: None,
            ..opts
        },
        INGRESS_HOST,
        "/orders",
        &[],
    )
    .await;
    println!(
        "  without a client certificate: {}\n",
        match unauth {
            Ok(r) => format!("unexpected {}", r.status),
            Err(e) => format!("refused ({e})"),
        }
    );
    if once {
        return Ok(());
    }
    let o = proxy.outbound;
    println!("try it by hand (Ctrl-C to stop):");
    println!("  curl -sS -H 'Host: {HOST}' http://{o}/v1/items");
    println!("  curl -sS -x http://{o} http://{HOST}/v1/items");
    println!(
        "  curl -sS --cacert {ca} --cert {cc} --key {ck} --resolve {INGRESS_HOST}:{p}:{ip} https://{INGRESS_HOST}:{p}/orders",
        ca = ca_file.display(),
        cc = client_cert.display(),
        ck = client_key.display(),
        p = ingress.port(),
        ip = ingress.ip()
    );
    println!(
        "  curl -sS http://{}/stats/prometheus | grep meshgate_",
        proxy.stats
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

/// Removes a directory and what is in it when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
