//! Connection lifecycle on the inbound side: h2c pools to the app, TLS
//! sessions across reloads, listeners following the configuration,
//! upgrades and passthrough counted and drained, the admin ports answering
//! while a slow reload runs.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// An h2c (prior knowledge) app that counts the connections it accepts.
async fn counting_h2c_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?} {}", req.version(), req.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn h2c_connections_to_the_app_are_pooled() {
    let (app, accepted) = counting_h2c_app().await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: grpc}}
spec:
  servers:
  - port: {{number: 9090, name: grpc, protocol: GRPC}}
    hosts: [grpc.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc}}
spec:
  hosts: [grpc.test]
  gateways: [grpc]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}
"#,
        app.port()
    );
    let p = start_ports(tempdir(), &yaml, &[9090], |b| b.concurrency = 1).await;
    for i in 0..10 {
        let r = fetch(
            p.proxy.inbound()[&9090],
            "POST",
            &format!("/svc/Method{i}"),
            Some("grpc.test"),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, format!("HTTP/2.0 /svc/Method{i}"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "every request shares one h2c connection to the app"
    );
}

#[tokio::test]
async fn sessions_resume_across_reloads_but_not_into_a_stricter_policy() {
    let ca = DevCa::new("resume CA");
    let dir = tempdir();
    let b = backend("app", Duration::ZERO).await;
    let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let cfg = client_config(&ca.cert_pem, &[&rustls::version::TLS13], None);
    let handshake = |cfg: Arc<rustls::ClientConfig>| {
        let addr = p.proxy.inbound()[&443];
        async move {
            let tls = connect_with(addr, cfg, HOST).await?;
            let kind = tls.get_ref().1.handshake_kind();
            // A request, so the client reads its session tickets.
            let mut conn = HttpsConn::new(tls, false)
                .await
                .map_err(|e| e.to_string())?;
            let r = conn.get(HOST, "/", &[]).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((kind, r.status))
        }
    };
    assert_eq!(
        handshake(cfg.clone()).await.unwrap(),
        (Some(rustls::HandshakeKind::Full), 200)
    );
    // A reload that changes something else: the session resumes.
    let other =
        route_all("other", &["other.test"], b).replace("gateways: [ingress]", "gateways: [mesh]");
    std::fs::write(p.config_path(), format!("{yaml}{other}")).unwrap();
    p.proxy.reload().await.expect("the new config loads");
    assert_eq!(
        handshake(cfg.clone()).await.unwrap(),
        (Some(rustls::HandshakeKind::Resumed), 200),
        "resumed across the reload"
    );
    // The server becomes MUTUAL: a session issued when no client
    // certificate was asked for must not resume into it.
    let mutual = yaml.replace(
        "mode: SIMPLE",
        &format!("mode: MUTUAL\n      caCertificates: {}", ca_file.display()),
    );
    std::fs::write(p.config_path(), mutual).unwrap();
    p.proxy.reload().await.expect("the MUTUAL config loads");
    match handshake(cfg.clone()).await {
        Ok((kind, status)) => {
            panic!("a client without a certificate got through a MUTUAL server: {kind:?} {status}")
        }
        Err(e) => assert!(
            e.to_ascii_lowercase().contains("certificate"),
            "refused for the missing certificate: {e}"
        ),
    }
}

#[tokio::test]
async fn a_reload_binds_added_ports_and_closes_removed_ones() {
    let b = backend("app", Duration::ZERO).await;
    let slow = backend("slow", Duration::from_millis(500)).await;
    let plain = |port: u16| {
        gateway(&[server(port, "HTTP", &[HOST, "slow.test"], &[])])
            + &route_all("app", &[HOST], b)
            + &route_all("slow", &["slow.test"], slow)
    };
    let p = start_ports(tempdir(), &plain(8080), &[8080, 8081], |_| {}).await;
    let old = p.proxy.inbound()[&8080];
    assert_eq!(p.proxy.inbound().len(), 1);
    assert_eq!(
        fetch(old, "GET", "/", Some(HOST)).await.unwrap().status,
        200
    );
    // A request in flight on the old port while the reload removes it.
    let mut kept = TcpStream::connect(old).await.unwrap();
    kept.write_all(b"GET /in-flight HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(p.config_path(), plain(8081)).unwrap();
    p.proxy.reload().await.expect("the new config loads");
    let ports = p.proxy.inbound();
    assert_eq!(ports.keys().copied().collect::<Vec<_>>(), vec![8081]);
    let new = ports[&8081];
    let r = fetch(new, "GET", "/new", Some(HOST)).await.unwrap();
    assert_eq!(r.status, 200, "the added port serves: {}", r.body);
    assert!(
        TcpStream::connect(old).await.is_err(),
        "the removed port {old} accepts nothing"
    );
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut kept))
        .await
        .expect("the request in flight is answered")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Then the drained connection closes.
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        read_until_closed(&mut kept, Duration::from_secs(5)),
    )
    .await
    .expect("closed after its last response");
    assert!(closed.is_ok(), "the connection ended: {closed:?}");
    let m = p.metrics().await;
    for change in ["added", "removed"] {
        assert_eq!(
            meshgate::test_util::metric_value(
                &m,
                &format!("meshgate_listener_changes_total{{change=\"{change}\"}}")
            ),
            1.0,
            "{m}"
        );
    }
}

#[tokio::test]
async fn upgrades_and_passthrough_are_counted_and_drained_at_shutdown() {
    let ca = DevCa::new("drain CA");
    let dir = tempdir();
    let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    let (ws, _) = super::connections::upgrade_backend().await;
    let backend_ca = DevCa::new("backend CA");
    let leaf = backend_ca.issue(&LeafSpec::server(&["pass.test"]));
    let standin = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .unwrap();
    let yaml = gateway(&[
        server(443, "HTTPS", &[HOST], &tls),
        server(8443, "TLS", &["pass.test"], &["mode: PASSTHROUGH".into()]),
    ]) + &route_all("ws", &[HOST], ws)
        + &format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: pass, namespace: default}}\nspec:\n  hosts: [pass.test]\n  gateways: [ingress]\n  tls:\n  - match:\n    - sniHosts: [pass.test]\n    route:\n    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}\n",
            standin.addr.port()
        );
    let p = start_ports(dir, &yaml, &[443, 8443], |b| {
        b.termination_drain_duration = Duration::from_millis(300);
    })
    .await;
    // An upgraded connection, bytes flowing.
    let mut up = tls_connect(p.proxy.inbound()[&443], &opts(&ca))
        .await
        .unwrap();
    up.write_all(
        format!("GET /chat HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut up).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    up.write_all(b"\x81\x02hi").await.unwrap();
    let mut back = [0u8; 4];
    up.read_exact(&mut back).await.unwrap();
    // A passed-through TLS connection to the backend, open.
    let pass_opts = ClientOpts {
        sni: Some("pass.test".into()),
        ca_pem: backend_ca.cert_pem.clone(),
        ..Default::default()
    };
    let mut pass = HttpsConn::new(
        tls_connect(p.proxy.inbound()[&8443], &pass_opts)
            .await
            .unwrap(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(pass.get("pass.test", "/", &[]).await.unwrap().status, 200);
    let tcp = |name: &str| {
        metric_sum(
            &p.proxy.state.metrics.encode(),
            name,
            &["reporter=\"destination\""],
        )
    };
    assert_eq!(tcp("istio_tcp_connections_opened_total"), 2.0);
    assert_eq!(tcp("istio_tcp_connections_closed_total"), 0.0);
    let started = Instant::now();
    p.proxy.shutdown();
    p.proxy.stopped().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drained within the limit: {:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(Duration::from_secs(2), up.read(&mut buf))
        .await
        .expect("the upgraded connection is closed");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp("istio_tcp_connections_closed_total") < 2.0 {
        assert!(Instant::now() < deadline, "both closes counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tcp("istio_tcp_received_bytes_total") > 0.0);
    assert!(tcp("istio_tcp_sent_bytes_total") > 0.0);
}

#[tokio::test]
async fn admin_ports_answer_while_a_slow_reload_runs() {
    let dir = tempdir();
    let config_dir = dir.path().join("conf");
    std::fs::create_dir_all(&config_dir).unwrap();
    let b = backend("app", Duration::ZERO).await;
    let yaml = gateway(&[server(8080, "HTTP", &[HOST], &[])]) + &route_all("app", &[HOST], b);
    std::fs::write(config_dir.join("a.yaml"), &yaml).unwrap();
    let p = start_ports(dir, "", &[8080], {
        let config_dir = config_dir.clone();
        move |b| b.config_paths = vec![config_dir]
    })
    .await;
    // A config file that blocks whoever reads it until it is written: the
    // reload sits in the load pipeline.
    let fifo = config_dir.join("slow.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // The file is written 1.5 s from now whatever happens, so a reload that
    // blocked this runtime would end (and the timings below fail) rather
    // than hang the test.
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(&fifo, b"").unwrap();
    });
    let reloads = p.proxy.reloads();
    let reload =
        tokio::spawn(async move { reloads.reload(meshgate::reload::Cause::Request).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probing = Instant::now();
    for _ in 0..5 {
        for (addr, path) in [
            (p.proxy.ready, "/healthz/ready"),
            (p.proxy.stats, "/stats/prometheus"),
            (p.proxy.admin, "/config_dump"),
        ] {
            let started = Instant::now();
            let r = fetch(addr, "GET", path, Some("localhost")).await.unwrap();
            let took = started.elapsed();
            assert_eq!(r.status, 200, "{path}");
            assert!(took < Duration::from_millis(100), "{path} took {took:?}");
        }
        let r = fetch(p.proxy.inbound()[&8080], "GET", "/", Some(HOST))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "traffic is served during the reload");
    }
    assert!(
        probing.elapsed() < Duration::from_millis(1000) && !reload.is_finished(),
        "every probe answered while the reload was still blocked on the file"
    );
    // Once the file is written the reader gets an empty document and the
    // reload completes.
    let result = tokio::time::timeout(Duration::from_secs(10), reload)
        .await
        .expect("the reload finishes once the file is written")
        .unwrap();
    writer.join().unwrap();
    result.expect("the reload succeeds");
}
