//! `meshgate demo`: the seed scenario end to end on one machine.
//!
//! An in-process stand-in for `api.external.com` serves HTTPS with a
//! certificate from a fresh dev CA; meshgate loads the ServiceEntry and
//! SIMPLE DestinationRule from `examples/demo/egress.yaml`; a plain-HTTP
//! request, as the app would send it, goes through meshgate and comes back
//! with what the external service saw on the wire.

use std::net::SocketAddr;
use std::time::Instant;

use crate::bootstrap::Bootstrap;
use crate::devpki::{DevCa, LeafSpec};
use crate::plan::Decision;
use crate::standin::{StandIn, StandInConfig, fetch};

/// The demo's Istio resources, with `${STANDIN_PORT}` and `${CA_FILE}`.
pub const DEMO_YAML: &str = include_str!("../examples/demo/egress.yaml");

/// The external host of the seed scenario.
pub const HOST: &str = "api.external.com";

/// Runs the demo. With `once`, exits after the request; otherwise stays up
/// until Ctrl-C so the printed curl commands can be tried.
pub async fn run(outbound_addr: SocketAddr, once: bool) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("meshgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = DevCa::new("meshgate demo CA");
    let ca_file = ca.write_cert(&dir, "ca.crt").map_err(|e| e.to_string())?;
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
    std::fs::write(&config_file, &yaml).map_err(|e| e.to_string())?;

    let bootstrap = Bootstrap {
        config_paths: vec![config_file.clone()],
        outbound_addr,
        ..Bootstrap::ephemeral()
    };
    let loaded = crate::app::load(&bootstrap).map_err(|e| e.to_string())?;
    let Decision::Registered(target) = loaded.plan.outbound.route(HOST, 80, 0) else {
        return Err("the demo configuration does not register api.external.com:80".into());
    };
    let proxy = crate::app::build(bootstrap, loaded)
        .await
        .map_err(|e| format!("{e} (try --outbound-addr 127.0.0.1:0)"))?;

    println!("meshgate demo: TLS origination for the seed scenario\n");
    println!("  config            {}", config_file.display());
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
        return Err(format!(
            "request through meshgate failed: {} {}",
            resp.status,
            resp.body.trim()
        ));
    }
    let seen = external
        .last()
        .ok_or("the external service saw no TLS connection")?;
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
    if once {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let o = proxy.outbound;
    println!("try it by hand (Ctrl-C to stop):");
    println!("  curl -sS -H 'Host: {HOST}' http://{o}/v1/items");
    println!("  curl -sS -x http://{o} http://{HOST}/v1/items");
    println!(
        "  curl -sS http://{}/stats/prometheus | grep meshgate_",
        proxy.stats
    );
    let _ = tokio::signal::ctrl_c().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
