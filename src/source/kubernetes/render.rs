//! An object from the API server as a document for the parser: the same
//! JSON `kubectl get -o json` prints, less what the parser must not see.
//!
//! `apiVersion` and `kind` come from the resource watched (list items of
//! built-in kinds carry neither). `status`, `metadata.managedFields` and
//! every metadata field but name, namespace, labels and annotations are
//! dropped, and so is the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation (a whole copy of the object: for a Secret, its keys).

use ::kube::api::{ApiResource, DynamicObject};
use serde_json::{Map, Value};

use crate::source::{Document, ObjectKey};

/// The annotation `kubectl apply` keeps a copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `obj`, listed or watched as `resource` in `namespace`, as a document.
/// `None` for an object without a name (the API server never sends one).
pub fn render(obj: &DynamicObject, resource: &ApiResource, namespace: &str) -> Option<Document> {
    let meta = &obj.metadata;
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    let namespace = meta.namespace.as_deref().unwrap_or(namespace);
    let mut out = Map::new();
    out.insert("apiVersion".into(), resource.api_version.clone().into());
    out.insert("kind".into(), resource.kind.clone().into());
    let mut metadata = Map::new();
    metadata.insert("name".into(), name.into());
    metadata.insert("namespace".into(), namespace.into());
    if let Some(labels) = meta.labels.as_ref().filter(|l| !l.is_empty()) {
        metadata.insert("labels".into(), serde_json::to_value(labels).ok()?);
    }
    if let Some(annotations) = &meta.annotations {
        let kept: Map<String, Value> = annotations
            .iter()
            .filter(|(k, _)| k.as_str() != LAST_APPLIED)
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if !kept.is_empty() {
            metadata.insert("annotations".into(), Value::Object(kept));
        }
    }
    out.insert("metadata".into(), Value::Object(metadata));
    if let Value::Object(rest) = &obj.data {
        for (k, v) in rest {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Some(Document {
        key: ObjectKey::new(namespace, &resource.kind, name),
        version: meta.resource_version.clone().unwrap_or_default(),
        text: Value::Object(out).to_string(),
    })
}

/// The key of `obj` (for a deletion).
pub fn key(obj: &DynamicObject, resource: &ApiResource, namespace: &str) -> Option<ObjectKey> {
    let name = obj.metadata.name.as_deref().filter(|n| !n.is_empty())?;
    let namespace = obj.metadata.namespace.as_deref().unwrap_or(namespace);
    Some(ObjectKey::new(namespace, &resource.kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> ApiResource {
        ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Secret".into(),
            plural: "secrets".into(),
        }
    }

    fn gateways() -> ApiResource {
        ApiResource {
            group: "networking.istio.io".into(),
            version: "v1beta1".into(),
            api_version: "networking.istio.io/v1beta1".into(),
            kind: "Gateway".into(),
            plural: "gateways".into(),
        }
    }

    #[test]
    fn what_the_api_server_adds_is_dropped() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {
                "name": "gw",
                "namespace": "shop",
                "uid": "0b9c",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2025-01-01T00:00:00Z",
                "labels": {"app": "gw"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}",
                    "note": "kept"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"selector": {"istio": "gw"}, "servers": []},
            "status": {"conditions": []}
        }))
        .unwrap();
        let doc = render(&obj, &gateways(), "default").unwrap();
        assert_eq!(doc.key, ObjectKey::new("shop", "Gateway", "gw"));
        assert_eq!(doc.version, "42");
        let v: Value = serde_json::from_str(&doc.text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1beta1",
                "kind": "Gateway",
                "metadata": {
                    "name": "gw",
                    "namespace": "shop",
                    "labels": {"app": "gw"},
                    "annotations": {"note": "kept"}
                },
                "spec": {"selector": {"istio": "gw"}, "servers": []}
            }),
            "apiVersion from the version watched"
        );
        // And the document is what the parser reads, under its origin.
        let origin = doc.key.origin();
        let (config, errors) =
            crate::config::load_documents([(origin.as_path(), doc.text.as_str())], &[]);
        assert!(errors.0.is_empty(), "{errors}");
        assert_eq!(config.gateways[0].source.to_string(), "shop/Gateway/gw");
    }

    #[test]
    fn a_listed_secret_gets_its_kind_and_namespace() {
        // List items of built-in kinds carry no apiVersion or kind.
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gw-cert", "resourceVersion": "7"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}
        }))
        .unwrap();
        let doc = render(&obj, &secrets(), "shop").unwrap();
        assert_eq!(doc.key.to_string(), "shop/Secret/gw-cert");
        let origin = doc.key.origin();
        let (config, errors) =
            crate::config::load_documents([(origin.as_path(), doc.text.as_str())], &[]);
        assert!(errors.0.is_empty(), "{errors}");
        assert_eq!(config.secrets[0].data["tls.crt"], b"cert");
        assert_eq!(
            key(&obj, &secrets(), "shop"),
            Some(ObjectKey::new("shop", "Secret", "gw-cert"))
        );
        let unnamed: DynamicObject =
            serde_json::from_value(serde_json::json!({"metadata": {}})).unwrap();
        assert!(render(&unnamed, &secrets(), "shop").is_none());
    }
}
