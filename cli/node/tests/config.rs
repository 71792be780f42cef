//! `serve`'s configuration, from any file text and any `AGENTLOG_*`
//! values: a configuration or an `invalid` error saying what is wrong,
//! never a panic (issue 15, decoder hardening). The file is docs/CONFIG.md's
//! example damaged, or any text.
use agentlog_core::Kind;
use agentlog_node::Config;
use proptest::prelude::*;

const EXAMPLE: &str = r#"data = "/var/lib/agentlog"
http = "0.0.0.0:9464"

[nats]
url = "tls://nats-1.internal:4222"
credentials-file = "/etc/agentlog/service.creds"
tls-ca-file = "/etc/agentlog/ca.pem"
tls-required = true

[stream]
replicas = 3

[archive]
at = "00:30"

[projections]
cache-entities = 50000
"#;

fn load(text: &[u8], env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agentlog.toml");
    std::fs::write(&file, text).unwrap();
    let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    match Config::load(Some(&file), lookup) {
        Ok(config) => {
            let _ = config.auth();
        }
        Err(e) => assert_eq!(e.kind(), Kind::Invalid, "{e}"),
    }
}

fn env() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (prop::sample::select(&agentlog_node::config::KEYS[..]), ".{0,30}")
            .prop_map(|(key, value)| (agentlog_node::config::env_name(key), value)),
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn any_file_and_environment_is_a_configuration_or_invalid(
        text in proptest::collection::vec(any::<u8>(), 0..200),
        env in env(),
    ) {
        load(&text, &env);
    }

    #[test]
    fn a_damaged_example_is_a_configuration_or_invalid(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        env in env(),
    ) {
        let mut text = EXAMPLE.as_bytes().to_vec();
        for (at, flip) in flips {
            let i = at.index(text.len());
            text[i] ^= flip;
        }
        if let Some(cut) = cut {
            text.truncate(cut.index(text.len() + 1));
        }
        load(&text, &env);
    }
}

#[test]
fn the_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agentlog.toml");
    std::fs::write(&file, EXAMPLE).unwrap();
    let config = Config::load(Some(&file), |_| None).unwrap();
    assert_eq!(config.stream.replicas, 3);
}
