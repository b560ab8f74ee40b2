//! Which Secrets (and ConfigMaps) to watch: exactly those the
//! configuration's `credentialName`s may be read from, so the service
//! account reads no other Secret.
//!
//! The names follow `creds`' lookups: a certificate and key from the
//! Secret itself; a CA from `<name>-cacert`, else `<name>` (Istio's rule,
//! for DestinationRules and Gateway servers); `caCertCredentialName` from
//! a Secret or a ConfigMap of that name. A reference without a namespace is
//! in the proxy's.

use std::collections::BTreeSet;

use std::path::PathBuf;

use crate::bootstrap::Bootstrap;
use crate::plan::inbound::{ClientCaSource, ServerCertSource};
use crate::plan::{CredentialRef, IdentitySource, Plan, TrustSource};
use crate::source::Store;

use super::kinds::{CONFIG_MAPS, SECRETS, Scope};

/// The watch scopes (one Secret or ConfigMap each) `plan` may read.
pub fn referenced(plan: &Plan, namespace: &str) -> BTreeSet<Scope> {
    let mut out = BTreeSet::new();
    let mut add = |r: &CredentialRef, kind, suffix: &str| {
        out.insert(Scope {
            kind,
            namespace: r.namespace.clone().unwrap_or_else(|| namespace.to_string()),
            name: Some(format!("{}{suffix}", r.name)),
        });
    };
    let policies = plan.outbound.rules.iter().flat_map(|r| {
        std::iter::once(&r.default).chain(r.ports.values()).chain(
            r.subsets
                .values()
                .flat_map(|s| std::iter::once(&s.default).chain(s.ports.values())),
        )
    });
    for p in policies {
        if let TrustSource::Credential(r) = &p.tls.trust {
            add(r, SECRETS, "-cacert");
            add(r, SECRETS, "");
        }
        if let Some(IdentitySource::Credential(r)) = &p.tls.identity {
            add(r, SECRETS, "");
        }
    }
    for tls in plan
        .inbound
        .listeners
        .iter()
        .flat_map(|l| &l.servers)
        .filter_map(|s| s.tls.as_ref())
    {
        for c in &tls.certs {
            if let ServerCertSource::Credential(r) = c {
                add(r, SECRETS, "");
                // The CA shipped with the certificate, checked against it.
                add(r, SECRETS, "-cacert");
            }
        }
        match &tls.client_ca {
            Some(ClientCaSource::Credential(r)) => {
                add(r, SECRETS, "-cacert");
                add(r, SECRETS, "");
            }
            Some(ClientCaSource::CaCredential(r)) => {
                add(r, SECRETS, "");
                add(r, CONFIG_MAPS, "");
            }
            Some(ClientCaSource::File(_)) | None => {}
        }
    }
    out
}

/// The Secret and ConfigMap watches the store's objects (and the files)
/// call for.
pub fn credential_scopes(store: &Store, bootstrap: &Bootstrap) -> BTreeSet<Scope> {
    let objects = store.objects();
    let origins: Vec<(PathBuf, &str)> = objects
        .values()
        .filter(|d| d.key.kind != SECRETS.kind && d.key.kind != CONFIG_MAPS.kind)
        .map(|d| (d.key.origin(), d.text.as_str()))
        .collect();
    let (config, _) = crate::config::load_documents(
        origins.iter().map(|(o, t)| (o.as_path(), *t)),
        &bootstrap.config_paths,
    );
    let plan = crate::plan::compile_all(&config, bootstrap).plan;
    referenced(&plan, &bootstrap.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(yaml: &str) -> Vec<String> {
        let config = crate::config::load_str("t.yaml", yaml).expect("parses");
        let bootstrap = Bootstrap {
            namespace: "shop".into(),
            ..Bootstrap::default()
        };
        let plan = crate::plan::compile_all(&config, &bootstrap).plan;
        let mut out: Vec<String> = referenced(&plan, "shop")
            .into_iter()
            .map(|s| {
                format!(
                    "{}/{}/{}",
                    s.namespace,
                    s.kind.kind,
                    s.name.unwrap_or_default()
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn only_the_credential_names_are_watched() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: gw-cert}
  - port: {number: 8443, name: mtls, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, credentialName: "kubernetes://edge/mtls-cert", caCertCredentialName: client-ca}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client-cert}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: shop}
stringData: {a: b}
"#;
        assert_eq!(
            names(yaml),
            vec![
                "edge/Secret/mtls-cert",
                "edge/Secret/mtls-cert-cacert",
                "shop/ConfigMap/client-ca",
                "shop/Secret/client-ca",
                "shop/Secret/client-cert",
                "shop/Secret/client-cert-cacert",
                "shop/Secret/gw-cert",
                "shop/Secret/gw-cert-cacert",
            ]
        );
        assert!(names("").is_empty());
    }
}
