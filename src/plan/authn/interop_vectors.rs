/// Tokens and keys made with Python's `cryptography` (OpenSSL), an
/// implementation independent of aws-lc-rs: `exp` is 2100-01-01, issuer
/// `https://issuer.example`, audience `meshgate`.
const INTEROP_JWKS: &str = r#"{"keys": [{"kty": "RSA", "kid": "rsa", "n": "6VNHcsWzOXVO5DcRwK-GPCd-fsHMc9QBNO1d1kF5_GLgMteuUwCoDdMkarH9s9k_0tPEq1RG0M7txfHpPbAMil9ZjgczpPjgbuHQX3fAjHeplsO1MhrvfFn7wfW23RRCtRNrecEJXBjG3uVHI-wwhF2BpJVAv-K0TAQHvFSxkoIYF1BfUI83dG6lD9q1l_ntzWyWokAa4_7QAWD-xmkr4r6HF2Idu2KZep6X5iT3vqerCeVSKYSVBiUXcXL5F-GGpNYJBppjsIVxdU7kfc5kgTcT5SNoU50bi7z4YpOrmRr3QfJEWtBRfzeXXzgc4ygQhrbtTQc-fFtIgwo5l5xG3w", "e": "AQAB"}, {"kty": "EC", "kid": "p256", "crv": "P-256", "x": "AYu58x8Jm_PAWz1gKtFx0hMNrJcgkiCLDQWZT5FhEnU", "y": "rFRJrT_AwnhqsGpgJoHIWxROU9fQhbga7uiaT6-BJVA"}, {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "iGdyvfpLB_7MHZ-HUoe-fVYz-a31NsL2HDV12Eu1JLeqgwS3Y57aupmQ4Fi9amtk", "y": "0BBZ7Sl_ZvPCq3KGwXWcme43U3uEVPCvPOJwbFZzEKvDMsHEGB3swZycSkaa61lm"}, {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AGu5_PDUICVBLgwOEwBUhkDtNhQemrvbCBOIUqgXnp19BtE_Z7RRTwrwPVixsZ6XepYZfNT3vbDcGd0ZQl-y0NWo", "y": "Ad36nVrzYqaDZW6F_OaFLYH212pymV9-cF8loHz64ua73WAXc_ML1Noebs_CtNgvXFk2h3XtRVGpX34EPXwg4Aj-"}, {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "lNQECLA5MFgsXgzFkftgz09BEbYd7FqfjiOw0v7Qqc0"}]}"#;

const INTEROP_TOKENS: [(&str, &str); 6] = [
    (
        "RS256",
        "eyJhbGciOiAiUlMyNTYiLCAia2lkIjogInJzYSIsICJ0eXAiOiAiSldUIn0.eyJpc3MiOiAiaHR0cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsICJzdWIiOiAiaW50ZXJvcCIsICJhdWQiOiAibWVzaGdhdGUiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.pOQL679r0xVBeun0JcTAkWS5reuOskf70xWJNNqjvhCSgj46I15JorghHUgy-LqcWk3Eufm9qp9cEibkZ4GQwFfc7_SCKqLRh8HZrpjJ53JT-LFGrEJ5w4IyLsIB-yaAD5EeVFKV3lRJ3bdtWbSkR-LJQxPb2K1UsEZqLCplTdssFZf8AcKvIkZ4UvFLHm3ffyEMGRJeb-orKmthkhnNOCHqEJI_xGndPfskfaUBCo4_R1ZrCykvYAWGIs0Iq2OMbSIvrVFdyVXm75I1fpax5i4CEUc-mHj4nu71S0AIf9sviFYvbi5ks906A1Rt_ggxK94S_WcLdbYAbSK7Nh8-5Q",
    ),
    (
        "PS384",
        "eyJhbGciOiAiUFMzODQiLCAia2lkIjogInJzYSIsICJ0eXAiOiAiSldUIn0.eyJpc3MiOiAiaHR0cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsICJzdWIiOiAiaW50ZXJvcCIsICJhdWQiOiAibWVzaGdhdGUiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.r8ndApfbm_Yt-f-PRh-grY8B_XR8wqLGxfThQ_Ajnvrq9tQFGWoQVx0DBpRGHZGFK6Yfl1SrX5-TuzTnklOcuIoBdCEm-2k67epoYEvH3MOlhDBkf7WzL3lFGRNU4suehMZGV89uurv1CRpNKbZXNVE3lU35HVPh36u_77ip2cAKJ1tGjusXPXCygwd5_lQxhkEnz0WnKovPXv-97VPxLQkhsrB0HXuDAAv-ErX7ThgrKQimXMRmPtGASYyEQZzTKoZKDC7YGaqqBk4eUQ3UgzeSSZ5C-jkECuWXdBr7PJ9wQtfuwG-CZsS7rWscNAps4BLlE9WfB-suuaDLxEb5JQ",
    ),
    (
        "ES256",
        "eyJhbGciOiAiRVMyNTYiLCAia2lkIjogInAyNTYiLCAidHlwIjogIkpXVCJ9.eyJpc3MiOiAiaHR0cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsICJzdWIiOiAiaW50ZXJvcCIsICJhdWQiOiAibWVzaGdhdGUiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.d1FqkJ-ZHay5PQRerbhp3RszkQlOgFc0hn-ARB8st-QeDzCbHrb6UfcobcbT0xNPbkFgqIMWwhMyjvuwgVKnhw",
    ),
    (
        "ES384",
        "eyJhbGciOiAiRVMzODQiLCAia2lkIjogInAzODQiLCAidHlwIjogIkpXVCJ9.eyJpc3MiOiAiaHR0cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsICJzdWIiOiAiaW50ZXJvcCIsICJhdWQiOiAibWVzaGdhdGUiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.h1NfQr2qH5SjJ_PXMCJ0AeEQLLYehgwloV4f_uMx92hJvtod8PXDibaZz__iuREzqaoMz5ZeZXK3iHfGe0Ap0mkaNNETG669o1Bh7lz-uckuBs7sWr-WFByyZzz-5kr0",
    ),
    (
        "ES512",
        "eyJhbGciOiAiRVM1MTIiLCAia2lkIjogInA1MjEiLCAidHlwIjogIkpXVCJ9.eyJpc3MiOiAiaHR0cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsICJzdWIiOiAiaW50ZXJvcCIsICJhdWQiOiAibWVzaGdhdGUiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.AO7dmE4ZyLHj_Ue9VsQxldjp9lUisWF5X8z9gEInxGjY2XH2VRU12Z1Ty2_p8IHOoQ44lAn78NbiBqDx7ZaaofLjAe-uaCpZKUctUPsulg8kNCJfoUXbuDKhPLfxyCKPPwsjzIhx9gTBdZXUMZqzr6_a9gv_DFhNPDqgpMUdkRWM51X9",
    ),
    (
        "EdDSA",
        "eyJhbGciOiAiRWREU0EiLCAia2lkIjogImVkIiwgInR5cCI6ICJKV1QifQ.eyJpc3MiOiAiaHR0cHM6Ly9pc3N1ZXIuZXhhbXBsZSIsICJzdWIiOiAiaW50ZXJvcCIsICJhdWQiOiAibWVzaGdhdGUiLCAiZXhwIjogNDEwMjQ0NDgwMCwgImlhdCI6IDE3MDAwMDAwMDB9.h3FIwb6HQBst8qKfa-RPouNvJuhQbIqtPEmbGVkWmLsP78zy1q85vOqHddTJc7CkwBndo_XLi-DOfYs68TOUBQ",
    ),
];
