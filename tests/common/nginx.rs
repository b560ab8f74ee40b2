//! nginx as a TLS peer for interop tests: run in the foreground under the
//! test's temporary directory, one process, killed when dropped.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{NGINX, StartError, free_addr, read_lossy, tail, write_file};

/// A running nginx serving HTTPS on 127.0.0.1:`port`.
pub struct Nginx {
    child: Child,
    /// The HTTPS port.
    pub port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with its own prefix under `parent/nginx`, serving HTTPS
    /// for `host` with `cert`/`key` (and, with `client_ca`, demanding a
    /// client certificate it signed); on a fresh port again if the one
    /// picked was taken in between. Every response says what nginx saw:
    /// `hello from nginx proto=… sni=… client_dn=… verify=… host=… uri=…`.
    pub fn start(
        parent: &Path,
        host: &str,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Nginx {
        let mut last = String::new();
        for _ in 0..5 {
            match Nginx::try_start(parent, host, cert, key, client_ca) {
                Ok(n) => return n,
                Err(StartError::PortTaken(report)) => last = report,
                Err(StartError::Fatal(report)) => panic!("{report}"),
            }
        }
        panic!("nginx could not bind a port in 5 attempts; last:\n{last}");
    }

    fn try_start(
        parent: &Path,
        host: &str,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Nginx, StartError> {
        let dir = parent.join("nginx");
        fs::create_dir_all(dir.join("logs")).expect("nginx dir");
        let _ = fs::remove_file(dir.join("logs/error.log"));
        let port = free_addr().port();
        let d = dir.display();
        let client_auth = client_ca
            .map(|ca| {
                format!(
                    "ssl_verify_client on;\n        ssl_client_certificate {};",
                    ca.display()
                )
            })
            .unwrap_or_default();
        // master_process off: a single process, so killing the child we
        // spawned leaves nothing behind (and nothing switches user).
        let conf = format!(
            r#"master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {host};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        {client_auth}
        location / {{
            return 200 "hello from nginx proto=$ssl_protocol sni=$ssl_server_name client_dn=$ssl_client_s_dn verify=$ssl_client_verify host=$host uri=$request_uri\n";
        }}
    }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let conf_path = dir.join("nginx.conf");
        write_file(&conf_path, &conf);

        let stderr_path = dir.join("stderr.log");
        let stderr = fs::File::create(&stderr_path).expect("nginx stderr file");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {NGINX} (install nginx / nginx-light): {e}"));
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_listening(&stderr_path)?;
        Ok(nginx)
    }

    fn wait_listening(&mut self, stderr_path: &Path) -> Result<(), StartError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait nginx") {
                let stderr = read_lossy(stderr_path);
                let report = format!(
                    "nginx exited before listening ({status}).\n--- nginx stderr ---\n{stderr}\n--- error.log ---\n{}",
                    tail(&self.dir.join("logs/error.log"), 4000)
                );
                return Err(if stderr.contains("Address already in use") {
                    StartError::PortTaken(report)
                } else {
                    StartError::Fatal(report)
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError::Fatal(format!(
                    "nginx did not accept connections on {addr} within 15s.\n--- nginx stderr ---\n{}\n--- error.log ---\n{}",
                    read_lossy(stderr_path),
                    tail(&self.dir.join("logs/error.log"), 4000)
                )));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.join("logs/access.log"))
    }

    /// The ends of the error and access logs, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- nginx error.log ---\n{}\n--- nginx access.log ---\n{}",
            tail(&self.dir.join("logs/error.log"), 3000),
            tail(&self.dir.join("logs/access.log"), 2000)
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
