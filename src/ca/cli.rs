//! `meshgate ca`: create a CA, issue workload certificates, serve Istio's
//! signing API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use super::{CaError, MeshCa, spiffe_id};
use crate::creds::CredError;

/// Why a `ca` subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CaCommandError {
    /// Creating, loading or using the CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The token file cannot be read.
    #[error("{}: {source}", path.display())]
    Tokens {
        /// The token file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A token file line is not `TOKEN NAMESPACE SERVICE-ACCOUNT`.
    #[error("{}:{line}: expected `TOKEN NAMESPACE SERVICE-ACCOUNT`", path.display())]
    TokenLine {
        /// The token file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
    /// The CA's own serving certificate is not usable.
    #[error(transparent)]
    ServingCertificate(#[from] CredError),
    /// The TLS server cannot be set up.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// The async runtime cannot start.
    #[error(transparent)]
    Runtime(std::io::Error),
    /// The listen address cannot be bound.
    #[error("{addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The `ca` subcommands.
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a root (and optional intermediate) CA in Istio's plugin-CA
    /// layout: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem.
    Init {
        /// Directory to create the CA in.
        #[arg(long)]
        dir: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Sign workloads with an intermediate under the root.
        #[arg(long)]
        intermediate: bool,
        /// Root validity, e.g. 3650d.
        #[arg(long, default_value = "3650d", value_parser = crate::plan::duration::parse)]
        validity: Duration,
    },
    /// Issue a workload certificate (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)
    /// into Istio's file-mounted layout: cert-chain.pem, key.pem, root-cert.pem.
    Issue {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write the workload's files.
        #[arg(long)]
        out: PathBuf,
        /// Workload namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Workload service account.
        #[arg(long)]
        service_account: String,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Extra DNS names. Repeatable.
        #[arg(long)]
        dns: Vec<String>,
        /// Certificate lifetime (Istio's default is 24h).
        #[arg(long, default_value = "24h", value_parser = crate::plan::duration::parse)]
        validity: Duration,
    },
    /// Serve Istio's certificate-signing API (IstioCertificateService/
    /// CreateCertificate, gRPC over TLS) so sidecars get workload
    /// certificates; callers authenticate with a bearer token.
    Serve {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:15012")]
        listen: SocketAddr,
        /// Token file: one `TOKEN NAMESPACE SERVICE-ACCOUNT` per line.
        #[arg(long)]
        tokens: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Longest certificate lifetime handed out.
        #[arg(long, default_value = "24h", value_parser = crate::plan::duration::parse)]
        max_validity: Duration,
        /// Extra names on the CA's own serving certificate (besides
        /// `meshgate-ca`, `localhost` and the listen IP), e.g.
        /// `istiod.istio-system.svc`: what clients pass as --ca-server-name
        /// (Istio agents: `ISTIOD_SAN`). Repeatable.
        #[arg(long)]
        server_name: Vec<String>,
        /// This CA's cluster: requests whose `ClusterID` header names another
        /// cluster are refused (UNAUTHENTICATED). Without it any is accepted.
        #[arg(long)]
        cluster_id: Option<String>,
    },
}

/// Runs a `ca` subcommand.
pub fn run(cmd: CaCommand) -> Result<(), CaCommandError> {
    match cmd {
        CaCommand::Init {
            dir,
            trust_domain,
            intermediate,
            validity,
        } => {
            MeshCa::init(&dir, &trust_domain, intermediate, validity)?;
            println!(
                "created a {} CA for trust domain {trust_domain} in {} (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)",
                if intermediate {
                    "root + intermediate"
                } else {
                    "root"
                },
                dir.display()
            );
            Ok(())
        }
        CaCommand::Serve {
            dir,
            listen,
            tokens,
            trust_domain,
            max_validity,
            server_name,
            cluster_id,
        } => serve(
            &dir,
            listen,
            &tokens,
            &trust_domain,
            max_validity,
            &server_name,
            cluster_id,
        ),
        CaCommand::Issue {
            dir,
            out,
            namespace,
            service_account,
            trust_domain,
            dns,
            validity,
        } => {
            let id = spiffe_id(&trust_domain, &namespace, &service_account);
            MeshCa::load(&dir)?
                .issue(&id, &dns, validity)?
                .write(&out)?;
            println!(
                "issued {id} into {} (cert-chain.pem, key.pem, root-cert.pem)",
                out.display()
            );
            Ok(())
        }
    }
}

/// Bearer token → the SPIFFE ID it stands for.
type Tokens = HashMap<String, String>;

/// Reads a token file: one `TOKEN NAMESPACE SERVICE-ACCOUNT` per line.
fn read_tokens(path: &Path, trust_domain: &str) -> Result<Tokens, CaCommandError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaCommandError::Tokens {
        path: path.to_path_buf(),
        source,
    })?;
    let mut map = HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [token, ns, sa] = parts[..] else {
            return Err(CaCommandError::TokenLine {
                path: path.to_path_buf(),
                line: i + 1,
            });
        };
        map.insert(token.to_string(), spiffe_id(trust_domain, ns, sa));
    }
    Ok(map)
}

/// The names on the CA's own serving certificate: `meshgate-ca`,
/// `localhost`, the listen IP unless it is a wildcard, then `extra`.
fn serving_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["meshgate-ca".to_string(), "localhost".to_string()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// Serves the signing API on `listen` until Ctrl-C.
fn serve(
    dir: &Path,
    listen: SocketAddr,
    tokens: &Path,
    trust_domain: &str,
    max_validity: Duration,
    server_names: &[String],
    cluster_id: Option<String>,
) -> Result<(), CaCommandError> {
    let ca = MeshCa::load(dir)?;
    let tokens = read_tokens(tokens, trust_domain)?;
    // The CA's own serving certificate, from itself.
    let names = serving_names(listen, server_names);
    let own = ca.issue(
        &spiffe_id(trust_domain, "istio-system", "meshgate-ca"),
        &names,
        max_validity.max(Duration::from_secs(86400)),
    )?;
    let provider = crate::creds::provider();
    let id = crate::creds::identity_from_pem(
        own.cert_chain_pem.as_bytes(),
        own.key_pem.as_bytes(),
        &provider,
        "CA server",
    )?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            id.certified.as_ref().clone(),
        )));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let signer = Arc::new(super::grpc::Signer {
        ca,
        tokens,
        max_validity,
        cluster_id,
    });
    let runtime = tokio::runtime::Runtime::new().map_err(CaCommandError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| CaCommandError::Bind {
                addr: listen,
                source,
            })?;
        println!(
            "serving IstioCertificateService/CreateCertificate on {listen} (TLS names {})",
            names.join(", ")
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(super::grpc::serve(
            listener,
            tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            signer,
            stop.clone(),
        ));
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
        let _ = task.await;
        Ok(())
    })
}
