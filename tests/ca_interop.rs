//! meshgate's CA API against an independent implementation of Istio's
//! `security/v1alpha1/ca.proto` (`tests/data/istio/ca.proto`): Python stubs
//! generated from it with `grpc_tools.protoc`, run by grpc-core (Python's
//! `grpcio`).
//!
//! - A Python client calls `meshgate ca serve` (a real process) over TLS
//!   and gets a chain whose leaf carries the token's SPIFFE ID; a wrong
//!   token and an `ImpersonatedIdentity` request are refused with
//!   UNAUTHENTICATED; a `Struct` with every kind of value is accepted.
//! - A Python IstioCertificateService (signing the CSR with `cryptography`)
//!   serves meshgate's client: the identity files are written from
//!   `localhost:PORT`, the `ClusterID` header arrives, and a wrong token
//!   makes `meshgate run --ca-address localhost:PORT` fail naming
//!   UNAUTHENTICATED (16).
//!
//! Needs `python3` with `grpcio`, `grpcio-tools`, `protobuf` and
//! `cryptography` (`.ci/run` installs them). Without them the tests say why
//! and pass, except under `CI=true`, where they fail.

mod common;

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshgate::ca::{MeshCa, spiffe_id};
use meshgate::creds::{CertInfo, certs_from_pem, identity_from_pem, provider};
use meshgate::identity::{CaClient, fetch_into};
use meshgate::test_util::tempdir;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const DAY: Duration = Duration::from_secs(86400);

/// What the Python side imports.
const IMPORTS: &str = "import grpc, grpc_tools, google.protobuf, cryptography; \
                       print(grpc.__version__, google.protobuf.__version__)";

/// The interpreter, or `None` (skip) outside CI; under CI a missing peer
/// fails the test.
fn python_or_skip(test: &str) -> Option<String> {
    common::python::python_or_skip(
        test,
        "grpcio, grpcio-tools, protobuf and cryptography",
        IMPORTS,
    )
}

/// Generates `ca_pb2.py` and `ca_pb2_grpc.py` from Istio's proto into `out`.
fn generate_stubs(py: &str, out: &Path) {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/istio");
    let o = Command::new(py)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_dir.display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg("ca.proto")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.join("ca_pb2.py").exists() && out.join("ca_pb2_grpc.py").exists());
}

/// Runs a Python script with the stubs in `stubs` importable.
fn python(py: &str, stubs: &Path, script: &str) -> Command {
    let mut c = Command::new(py);
    c.arg("-c")
        .arg(script)
        .env("PYTHONPATH", stubs)
        // Stubs from an older grpc_tools need the pure-Python protobuf.
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python");
    c
}

/// A child process killed when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1 (free when this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Python client: `client.py PORT ROOT CSR OUT`. Prints `ok NAME` or
/// `FAIL NAME: WHY` per check and writes the good call's chain to OUT.
const CLIENT_PY: &str = r#"
import sys
import grpc
import ca_pb2, ca_pb2_grpc

port, root, csr_file, out = sys.argv[1:5]
creds = grpc.ssl_channel_credentials(root_certificates=open(root, "rb").read())
failed = False
def check(name, cond, why=""):
    global failed
    if cond:
        print("ok", name, flush=True)
    else:
        failed = True
        print("FAIL", name + ":", why, flush=True)

def call(channel, token, metadata=None, cluster="Kubernetes"):
    stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
    req = ca_pb2.IstioCertificateRequest(csr=open(csr_file).read(), validity_duration=3600)
    if metadata:
        req.metadata.update(metadata)
    md = [("authorization", "Bearer " + token)]
    if cluster:
        md.append(("clusterid", cluster))
    return stub.CreateCertificate(req, timeout=10, metadata=md)

# By host name, verified as "localhost".
channel = grpc.secure_channel("localhost:" + port, creds)
try:
    resp = call(channel, "good-token", {
        "WorkloadName": "frontend-1", "n": 1.5, "b": True, "nothing": None,
        "nested": {"x": "y"}, "list": ["a", 2],
    })
    chain = list(resp.cert_chain)
    check("good token gets a chain", len(chain) >= 2, repr(resp))
    check("leaf first", chain and "BEGIN CERTIFICATE" in chain[0], repr(chain[:1]))
    with open(out, "w") as f:
        f.write("".join(c if c.endswith("\n") else c + "\n" for c in chain))
except grpc.RpcError as e:
    check("good token gets a chain", False, "%s %s" % (e.code(), e.details()))

for name, token, metadata, cluster, want in [
    ("wrong token", "stolen", None, "Kubernetes", "missing or unknown bearer token"),
    ("impersonation", "good-token",
     {"ImpersonatedIdentity": "spiffe://cluster.local/ns/kube-system/sa/admin"},
     "Kubernetes", "request impersonation authentication failure"),
    ("another cluster", "good-token", None, "cluster2", "cluster2"),
]:
    try:
        call(channel, token, metadata, cluster)
        check(name + " refused", False, "answered")
    except grpc.RpcError as e:
        check(name + " refused UNAUTHENTICATED",
              e.code() == grpc.StatusCode.UNAUTHENTICATED and want in e.details(),
              "%s %s" % (e.code(), e.details()))
channel.close()

# The CA's extra --server-name, as an agent with ISTIOD_SAN verifies it.
channel = grpc.secure_channel("127.0.0.1:" + port, creds, options=[
    ("grpc.ssl_target_name_override", "istiod.istio-system.svc")])
try:
    resp = call(channel, "good-token", cluster=None)
    check("--server-name verified, no ClusterID", len(resp.cert_chain) >= 2, repr(resp))
except grpc.RpcError as e:
    check("--server-name verified, no ClusterID", False, "%s %s" % (e.code(), e.details()))
channel.close()
sys.exit(1 if failed else 0)
"#;

#[test]
fn python_client_gets_a_certificate_from_meshgate_ca_serve() {
    let Some(py) = python_or_skip("ca serve with a Python Istio client") else {
        return;
    };
    let dir = tempdir();
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    generate_stubs(&py, &stubs);
    let ca_dir = dir.path().join("ca");
    let st = Command::new(BIN)
        .args(["ca", "init", "--intermediate", "--dir"])
        .arg(&ca_dir)
        .status()
        .unwrap();
    assert!(st.success());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "good-token default frontend\n").unwrap();
    // The CSR asks for another identity; the CA must ignore that.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin"
            .to_string()
            .try_into()
            .unwrap(),
    )];
    let csr = dir.path().join("csr.pem");
    std::fs::write(&csr, params.serialize_request(&key).unwrap().pem().unwrap()).unwrap();

    // A port taken between picking and binding: try again on another.
    let mut server = None;
    for _ in 0..3 {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["ca", "serve", "--dir"])
            .arg(&ca_dir)
            .arg("--tokens")
            .arg(&tokens)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--server-name",
                "istiod.istio-system.svc",
                "--cluster-id",
                "Kubernetes",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.starts_with("serving") {
            server = Some((Kill(child), port));
            break;
        }
        let _ = child.wait();
    }
    let Some((_server, port)) = server else {
        panic!("meshgate ca serve did not start");
    };

    let out = dir.path().join("chain.pem");
    let o = python(&py, &stubs, CLIENT_PY)
        .arg(port.to_string())
        .arg(ca_dir.join("root-cert.pem"))
        .arg(&csr)
        .arg(&out)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "Python client checks failed:\n{report}");
    let chain = std::fs::read_to_string(&out).unwrap();
    let certs = certs_from_pem(chain.as_bytes()).unwrap();
    assert_eq!(certs.len(), 3, "leaf, intermediate, root");
    let leaf = CertInfo::parse(&certs[0]).unwrap();
    assert_eq!(
        leaf.sans,
        vec![format!(
            "URI:{}",
            spiffe_id("cluster.local", "default", "frontend")
        )]
    );
    assert!(leaf.not_after - leaf.not_before <= 3600 + 60);
    identity_from_pem(
        chain.as_bytes(),
        key.serialize_pem().as_bytes(),
        &provider(),
        "t",
    )
    .unwrap();
}

/// The Python CA: `server.py CA_CERT CA_KEY CHAIN SERVER_CERT SERVER_KEY`.
/// Signs the CSR for the token's identity with `cryptography`, answers
/// UNAUTHENTICATED to any other token; prints its port, then one line per
/// request: `request token=ok|bad clusterid=X validity=N`.
const SERVER_PY: &str = r#"
import sys, datetime
from concurrent import futures
import grpc
import ca_pb2, ca_pb2_grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

ca_cert_f, ca_key_f, chain_f, cert_f, key_f = sys.argv[1:6]
ca_cert = x509.load_pem_x509_certificate(open(ca_cert_f, "rb").read())
ca_key = serialization.load_pem_private_key(open(ca_key_f, "rb").read(), None)
ca_chain = open(chain_f).read()
IDENTITY = "spiffe://cluster.local/ns/default/sa/frontend"

class Service(ca_pb2_grpc.IstioCertificateServiceServicer):
    def CreateCertificate(self, request, context):
        md = dict(context.invocation_metadata())
        ok = md.get("authorization") == "Bearer good-token"
        print("request token=%s clusterid=%s validity=%d" % (
            "ok" if ok else "bad", md.get("clusterid", "-"), request.validity_duration), flush=True)
        if not ok:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "request authenticate failure")
        csr = x509.load_pem_x509_csr(request.csr.encode())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(seconds=request.validity_duration or 3600))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(IDENTITY)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([
                x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
        leaf = cert.public_bytes(serialization.Encoding.PEM).decode()
        # As istiod answers: the leaf, then the CA chain, the root last.
        return ca_pb2.IstioCertificateResponse(cert_chain=[leaf, ca_chain])

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(Service(), server)
creds = grpc.ssl_server_credentials([(open(key_f, "rb").read(), open(cert_f, "rb").read())])
port = server.add_secure_port("127.0.0.1:0", creds)
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
"#;

/// The Python CA's output lines, read on a thread.
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn meshgate_client_gets_its_identity_from_a_python_istio_ca() {
    let Some(py) = python_or_skip("meshgate client with a Python Istio CA") else {
        return;
    };
    let dir = tempdir();
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    generate_stubs(&py, &stubs);
    let ca_dir = dir.path().join("ca");
    let ca = MeshCa::init(&ca_dir, "cluster.local", true, DAY).unwrap();
    let serving = ca
        .issue(
            &spiffe_id("cluster.local", "istio-system", "istiod"),
            &["istiod.istio-system.svc".into(), "localhost".into()],
            DAY,
        )
        .unwrap();
    let (cert, key) = (dir.path().join("srv.pem"), dir.path().join("srv.key"));
    std::fs::write(&cert, &serving.cert_chain_pem).unwrap();
    std::fs::write(&key, &serving.key_pem).unwrap();
    let mut child = python(&py, &stubs, SERVER_PY)
        .arg(ca_dir.join("ca-cert.pem"))
        .arg(ca_dir.join("ca-key.pem"))
        .arg(ca_dir.join("cert-chain.pem"))
        .arg(&cert)
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let _server = Kill(child);
    let next = || rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let port: u16 = next().trim().parse().unwrap();

    let root = ca_dir.join("root-cert.pem");
    let token = dir.path().join("token");
    std::fs::write(&token, "good-token\n").unwrap();
    // By host name; the TLS name is the host's, `localhost`.
    let mut client = CaClient::from_files(
        format!("localhost:{port}").parse().unwrap(),
        &None,
        &root,
        &token,
    )
    .unwrap();
    client.cluster_id = Some("cluster-a".into());
    let identity = dir.path().join("identity");
    fetch_into(&client, &identity).await.unwrap();
    assert_eq!(
        next(),
        "request token=ok clusterid=cluster-a validity=86400",
        "ClusterID header and validity_duration as the Python CA saw them"
    );
    let chain = std::fs::read_to_string(identity.join("cert-chain.pem")).unwrap();
    let certs = certs_from_pem(chain.as_bytes()).unwrap();
    assert_eq!(certs.len(), 3, "leaf, intermediate, root");
    assert_eq!(
        CertInfo::parse(&certs[0]).unwrap().sans,
        vec!["URI:spiffe://cluster.local/ns/default/sa/frontend".to_string()]
    );
    let key_pem = std::fs::read_to_string(identity.join("key.pem")).unwrap();
    identity_from_pem(chain.as_bytes(), key_pem.as_bytes(), &provider(), "t").unwrap();
    assert_eq!(
        std::fs::read_to_string(identity.join("root-cert.pem")).unwrap(),
        std::fs::read_to_string(&root).unwrap()
    );

    // `meshgate run` with a wrong token: refused before anything starts,
    // the trailers-only UNAUTHENTICATED reported as such.
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "stolen\n").unwrap();
    let config = dir.path().join("empty.yaml");
    std::fs::File::create(&config)
        .unwrap()
        .write_all(b"# nothing\n")
        .unwrap();
    let o = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .arg("--identity-dir")
        .arg(dir.path().join("identity2"))
        .args(["--ca-address", &format!("localhost:{port}")])
        .args(["--ca-server-name", "istiod.istio-system.svc"])
        .arg("--ca-root")
        .arg(&root)
        .arg("--ca-token-file")
        .arg(&wrong)
        .env("CLUSTER_ID", "cluster-b")
        .env_remove("ISTIOD_SAN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "CA refused the request: grpc-status 16 (UNAUTHENTICATED): request authenticate failure"
        ),
        "{stderr}"
    );
    assert_eq!(
        next(),
        "request token=bad clusterid=cluster-b validity=86400"
    );
    assert!(!dir.path().join("identity2/cert-chain.pem").exists());
}
