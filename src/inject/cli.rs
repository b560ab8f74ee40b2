//! `meshgate inject -f FILE`: the flags, reading the input, printing.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::{DEFAULT_IMAGE, DEFAULT_INIT_IMAGE, Options};

/// `meshgate inject --help`'s description.
pub const LONG_ABOUT: &str = "Print Kubernetes manifests with meshgate added to their pods, \
as istioctl kube-inject does: every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet and \
ReplicationController (also in a List) gets the meshgate-init init container (the capture \
rules, `meshgate iptables`, with NET_ADMIN and NET_RAW only) and the meshgate container \
(uid 1337, read-only root filesystem, readiness on 15021, metrics on 15020), their volumes \
and annotations. Other documents are printed as they are.

A pod is left as it is when meshgate (or Istio) is already injected, so injecting twice \
changes nothing; when its label or annotation sidecar.istio.io/inject is \"false\"; with \
hostNetwork; or in a Kubernetes system namespace. Each is reported on stderr.

The pod's namespace needs the meshgate-bootstrap ConfigMap and RBAC for its service account: \
see deploy/kubernetes/. Errors name the file, line and document; nothing is printed then \
(exit status 1).

  meshgate inject -f deployment.yaml | kubectl apply -f -";

/// `meshgate inject` flags.
#[derive(clap::Args, Debug)]
pub struct InjectArgs {
    /// The manifests (multi-document YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: PathBuf,
    /// The meshgate container's image.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE,
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub image: String,
    /// The init container's image: meshgate with iptables and nftables
    /// (the `init` stage of deploy/Dockerfile).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_INIT_IMAGE,
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub init_image: String,
}

/// Runs the command: the manifests on stdout, warnings and errors on
/// stderr (`meshgate inject: …`).
pub fn main(args: &InjectArgs) -> ExitCode {
    let stdin = args.filename.as_os_str() == "-";
    let name = args.filename.display().to_string();
    let text = if stdin {
        let mut buf = Vec::new();
        std::io::stdin().lock().read_to_end(&mut buf).map(|_| buf)
    } else {
        std::fs::read(&args.filename)
    };
    let text = match text {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                eprintln!("meshgate inject: {name}: not UTF-8 text");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("meshgate inject: {name}: cannot read: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        image: args.image.clone(),
        init_image: args.init_image.clone(),
    };
    match super::inject(&name, &text, &options) {
        Ok(injected) => {
            for w in &injected.warnings {
                eprintln!("meshgate inject: warning: {w}");
            }
            let mut out = std::io::stdout().lock();
            if let Err(e) = out
                .write_all(injected.output.as_bytes())
                .and_then(|()| out.flush())
            {
                eprintln!("meshgate inject: cannot write the output: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("meshgate inject: error: {e}");
            }
            eprintln!(
                "meshgate inject: {} error(s); nothing was printed",
                errors.len()
            );
            ExitCode::FAILURE
        }
    }
}
