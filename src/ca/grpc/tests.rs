use super::*;

const CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----\nx\n";

#[test]
fn request_and_response_round_trip() {
    let enc = encode_request(CSR, Duration::from_secs(86400), &[]);
    assert_eq!(
        decode_request(&enc).unwrap(),
        CertificateRequest {
            csr: CSR.into(),
            validity_secs: 86400,
            metadata: BTreeMap::new(),
        }
    );
    let chain = vec!["a".to_string(), "b".repeat(300)];
    assert_eq!(decode_response(&encode_response(&chain)).unwrap(), chain);
    assert!(
        decode_request(&[0x0A, 0x05, b'x']).is_err(),
        "truncated input is an error, not a panic"
    );
    assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
}

/// The bytes protoc's encoders produce for Istio's messages
/// (`security/v1alpha1/ca.proto`): each field's tag is its number and
/// wire type.
#[test]
fn field_numbers_are_istios() {
    // IstioCertificateResponse { cert_chain: ["z"] }: field 1, wire
    // type 2 (tag 0x0A).
    assert_eq!(encode_response(&["z".into()]), [0x0A, 0x01, b'z']);
    // Field 200 (meshgate's former number) is an unknown field, skipped.
    assert!(
        decode_response(&[0xC2, 0x0C, 0x01, b'z'])
            .unwrap()
            .is_empty()
    );
    // IstioCertificateRequest { csr: "c", validity_duration: 60 }: field
    // 1 wire type 2 (0x0A), field 3 varint (0x18).
    assert_eq!(
        encode_request("c", Duration::from_secs(60), &[]),
        [0x0A, 0x01, b'c', 0x18, 60]
    );
    // metadata (field 4, 0x22): Struct { fields { key: "k", value {
    // string_value: "v" } } }.
    assert_eq!(
        encode_request("c", Duration::from_secs(60), &[("k", "v")]),
        [
            0x0A, 0x01, b'c', 0x18, 60, 0x22, 0x0A, 0x0A, 0x08, 0x0A, 0x01, b'k', 0x12, 0x03, 0x1A,
            0x01, b'v'
        ]
    );
}

#[test]
fn metadata_struct_is_decoded_and_other_values_skipped() {
    let enc = encode_request(
        CSR,
        Duration::from_secs(60),
        &[
            (IMPERSONATED_IDENTITY, "spiffe://cluster.local/ns/a/sa/b"),
            ("ClusterID", "Kubernetes"),
        ],
    );
    let req = decode_request(&enc).unwrap();
    assert_eq!(
        req.metadata.get(IMPERSONATED_IDENTITY).map(String::as_str),
        Some("spiffe://cluster.local/ns/a/sa/b")
    );
    assert_eq!(
        req.metadata.get("ClusterID").map(String::as_str),
        Some("Kubernetes")
    );
    // A Struct holding a number (Value.number_value = 2, fixed64), a
    // bool (4), a null (1) and a nested struct (5), as protoc encodes
    // them: decoded without failing, only strings kept.
    let mut fields = Vec::new();
    for (key, value) in [
        ("n", vec![0x11, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F]),
        ("b", vec![0x20, 0x01]),
        ("z", vec![0x08, 0x00]),
        ("s", vec![0x2A, 0x00]),
        ("WorkloadName", vec![0x1A, 0x02, b'w', b'1']),
    ] {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, key.as_bytes());
        put_bytes(&mut entry, 2, &value);
        put_bytes(&mut fields, 1, &entry);
    }
    let mut msg = encode_request(CSR, Duration::ZERO, &[]);
    put_bytes(&mut msg, 4, &fields);
    let req = decode_request(&msg).unwrap();
    assert_eq!(
        req.metadata,
        BTreeMap::from([("WorkloadName".to_string(), "w1".to_string())])
    );
    // A negative int64 validity (ten-byte varint) decodes as negative.
    let mut msg = vec![0x0A, 0x01, b'c', 0x18];
    put_varint(&mut msg, -5i64 as u64);
    assert_eq!(decode_request(&msg).unwrap().validity_secs, -5);
    // A truncated Struct is an error, not a panic.
    let mut msg = encode_request(CSR, Duration::ZERO, &[]);
    put_bytes(&mut msg, 4, &[0x0A, 0x05, 0x0A]);
    assert!(decode_request(&msg).is_err());
}

#[test]
fn status_is_read_from_trailers_or_trailers_only_headers() {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from_static("16"));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("request authenticate failure%3A bad token"),
    );
    assert_eq!(
        grpc_status(&headers, None),
        Some((16, "request authenticate failure: bad token".into()))
    );
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    assert_eq!(
        grpc_status(&HeaderMap::new(), Some(&trailers)),
        Some((0, String::new()))
    );
    assert_eq!(grpc_status(&HeaderMap::new(), None), None);
    let e = GrpcError::Refused {
        status: 16,
        message: "m".into(),
    };
    assert_eq!(
        e.to_string(),
        "CA refused the request: grpc-status 16 (UNAUTHENTICATED): m"
    );
    assert_eq!(status_name(&99), "unknown code");
}

#[test]
fn grpc_message_percent_encoding() {
    let m = "100% bad\nnewline é";
    assert_eq!(percent_encode(m), "100%25 bad%0Anewline %C3%A9");
    assert_eq!(percent_decode(percent_encode(m).as_bytes()), m);
    assert_eq!(percent_decode(b"50%"), "50%");
    assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
}

#[test]
fn ca_addresses() {
    let a: CaAddress = "istiod.istio-system.svc:15012".parse().unwrap();
    assert_eq!(
        (a.host.as_str(), a.port),
        ("istiod.istio-system.svc", 15012)
    );
    assert_eq!(a.to_string(), "istiod.istio-system.svc:15012");
    let v6: CaAddress = "[::1]:15012".parse().unwrap();
    assert_eq!(v6.host, "::1");
    assert_eq!(v6.to_string(), "[::1]:15012");
    assert_eq!(
        "127.0.0.1:1".parse::<CaAddress>().unwrap().host,
        "127.0.0.1"
    );
    for bad in [
        "istiod",
        ":15012",
        "host:",
        "host:99999",
        "::1:15012",
        "[x]:1",
        "a b:1",
    ] {
        assert!(bad.parse::<CaAddress>().is_err(), "{bad}");
    }
    let client = CaClient {
        addr: a,
        server_name: None,
        root_pem: String::new(),
        token: String::new(),
        token_file: None,
        cluster_id: None,
        validity: Duration::ZERO,
    };
    assert_eq!(client.tls_name(), "istiod.istio-system.svc");
    // The token file is read at each request: a rotated token is used.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("istio-token");
    std::fs::write(&file, "first\n").unwrap();
    let rotating = CaClient {
        token: "first".into(),
        token_file: Some(file.clone()),
        ..client.clone()
    };
    assert_eq!(rotating.bearer(), "first");
    std::fs::write(&file, "second\n").unwrap();
    assert_eq!(rotating.bearer(), "second");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(rotating.bearer(), "first", "unreadable: the last known");
    let named = CaClient {
        server_name: Some("istiod.istio-system.svc.cluster.local".into()),
        ..client
    };
    assert_eq!(named.tls_name(), "istiod.istio-system.svc.cluster.local");
}
