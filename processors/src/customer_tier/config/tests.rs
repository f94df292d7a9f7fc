#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

fn config(json: serde_json::Value) -> Config {
    serde_json::from_value(json).unwrap()
}

fn problems(json: serde_json::Value) -> Vec<String> {
    config(json)
        .validate("processors.customer_tier")
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn defaults() {
    let c = config(serde_json::json!({"source": {"file": "configs/customers.yaml"}}));
    assert_eq!(c.customer_id_key, "customer_id");
    assert_eq!(c.tier_key, "tier");
    assert_eq!(c.default_tier, "unknown");
    assert_eq!(c.apply_to, ApplyTo::Both);
    assert_eq!(c.on_existing, OnExisting::Keep);
    assert!(c.attributes.is_empty() && c.drop_customer_id.is_none());
    assert_eq!(c.source.reload_interval, None);
    assert_eq!(c.source.required, None);
    assert!(c.source.file_required());
    let optional = config(serde_json::json!({"source": {
        "file": "configs/customers.yaml", "required": false
    }}));
    assert!(!optional.source.file_required());
    assert!(optional.validate("p").is_empty());
    assert!(c.validate("p").is_empty());
    let pg = config(serde_json::json!({"source": {"postgres": {"dsn": "host=db user=vla"}}}));
    let pg = pg.source.postgres.unwrap();
    assert_eq!(pg.query, DEFAULT_QUERY);
    assert_eq!(pg.refresh_interval, Duration::from_secs(30));
    assert_eq!(pg.timeout, Duration::from_secs(5));
}

#[test]
fn inline_entries_take_a_tier_or_fields() {
    let c = config(serde_json::json!({"source": {"inline": {
        "cust-0001": "enterprise",
        "cust-0002": {"tier": "pro", "plan": "annual", "seats": 12},
    }}}));
    let inline = c.source.inline.unwrap();
    assert_eq!(
        inline["cust-0001"],
        InlineCustomer::Tier("enterprise".into())
    );
    let InlineCustomer::Fields(f) = &inline["cust-0002"] else {
        panic!("fields")
    };
    assert_eq!(f["plan"], "annual");
    assert_eq!(f["seats"], "12");
    let err = serde_json::from_value::<Config>(serde_json::json!({"source": {"inline": {
        "c": ["a"]
    }}}))
    .unwrap_err()
    .to_string();
    assert!(err.contains("a tier, or a map with `tier`"), "{err}");
}

#[test]
fn postgres_debug_hides_the_dsn() {
    let c = config(serde_json::json!({"source": {"postgres": {
        "dsn": "host=db user=vla password=hunter2"
    }}}));
    let text = format!("{c:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("<hidden>"), "{text}");
}

#[test]
fn every_problem_with_its_path() {
    use serde_json::json;
    type Case = (&'static str, serde_json::Value, Vec<&'static str>);
    let p = "processors.customer_tier";
    let _ = p;
    let cases: Vec<Case> = vec![
        (
            "no source",
            json!({"source": {}}),
            vec!["processors.customer_tier.source: set exactly one of inline, file, postgres"],
        ),
        (
            "two sources",
            json!({"source": {"inline": {"a": "pro"}, "file": "c.yaml"}}),
            vec![
                "processors.customer_tier.source: set only one of inline, file, postgres (found inline, file)",
            ],
        ),
        (
            "inline problems",
            json!({"source": {"inline": {
                "a": "", "b": {"plan": "x"}, "c": {"tier": "pro", "customer_id": "c"}
            }}}),
            vec![
                "processors.customer_tier.source.inline.a: a tier is required and must not be empty",
                "processors.customer_tier.source.inline.b.tier: a tier is required and must not be empty",
                "processors.customer_tier.source.inline.c.customer_id: not allowed here: the map key is the customer id",
            ],
        ),
        (
            "empty inline",
            json!({"source": {"inline": {}}}),
            vec!["processors.customer_tier.source.inline: must list at least one customer"],
        ),
        (
            "file extension and interval",
            json!({"source": {"file": "customers.json", "reload_interval": "0"}}),
            vec![
                "processors.customer_tier.source.file: \"customers.json\": expected a name ending in .yaml, .yml or .csv",
                "processors.customer_tier.source.reload_interval: must be at least 100ms (got 0ns)",
            ],
        ),
        (
            "short reload_interval",
            json!({"source": {"file": "c.yaml", "reload_interval": "99ms"}}),
            vec![
                "processors.customer_tier.source.reload_interval: must be at least 100ms (got 99ms)",
            ],
        ),
        (
            "reload_interval without a file",
            json!({"source": {"inline": {"a": "pro"}, "reload_interval": "1s"}}),
            vec![
                "processors.customer_tier.source.reload_interval: only applies to a file source (postgres has refresh_interval)",
            ],
        ),
        (
            "required without a file",
            json!({"source": {"postgres": {"dsn": "host=db"}, "required": false}}),
            vec!["processors.customer_tier.source.required: only applies to a file source"],
        ),
        (
            "postgres problems",
            json!({"source": {"postgres": {
                "dsn": "", "query": " ", "refresh_interval": "0", "timeout": "0"
            }}}),
            vec![
                "processors.customer_tier.source.postgres.dsn: must not be empty",
                "processors.customer_tier.source.postgres.query: must not be empty",
                "processors.customer_tier.source.postgres.refresh_interval: must be at least 100ms (got 0ns)",
                "processors.customer_tier.source.postgres.timeout: must be at least 10ms (got 0ns)",
            ],
        ),
        (
            "short postgres intervals",
            json!({"source": {"postgres": {
                "dsn": "host=db", "refresh_interval": "50ms", "timeout": "9ms"
            }}}),
            vec![
                "processors.customer_tier.source.postgres.refresh_interval: must be at least 100ms (got 50ms)",
                "processors.customer_tier.source.postgres.timeout: must be at least 10ms (got 9ms)",
            ],
        ),
        (
            "password in two places, empty password_file, host and hostaddr counts",
            json!({"source": {"postgres": {
                "dsn": "host=a,b hostaddr=10.0.0.1 password=x", "password_file": ""
            }}}),
            vec![
                "processors.customer_tier.source.postgres.dsn: host names 2 hosts but hostaddr 1 addresses; give one address per host, or only one of the two",
                "processors.customer_tier.source.postgres.password_file: the dsn has a password= already; set the password in one place",
                "processors.customer_tier.source.postgres.password_file: must not be empty",
            ],
        ),
        (
            "bad dsn",
            json!({"source": {"postgres": {"dsn": "host=db port=notaport password=s3cret"}}}),
            vec![
                "processors.customer_tier.source.postgres.dsn: not a valid connection string: invalid connection string: invalid value for option `port`",
            ],
        ),
        (
            "dsn without host, and sslmode=require",
            json!({"source": {"postgres": {"dsn": "user=vla sslmode=require"}}}),
            vec![
                "processors.customer_tier.source.postgres.dsn: must name a host (host=... or hostaddr=...)",
                "processors.customer_tier.source.postgres.dsn: sslmode=require is not supported (connections are plain TCP)",
            ],
        ),
        (
            "keys",
            json!({"source": {"file": "c.csv"}, "customer_id_key": "id", "tier_key": "id", "default_tier": ""}),
            vec![
                "processors.customer_tier.default_tier: must not be empty",
                "processors.customer_tier.tier_key: must differ from customer_id_key",
            ],
        ),
        (
            "attributes",
            json!({"source": {"file": "c.csv"}, "attributes": {
                "tier": "x", "plan": "", "region": "tier", "name": "customer_name", "org": "customer_name"
            }}),
            vec![
                "processors.customer_tier.attributes.org: attribute key \"customer_name\" is also used by field \"name\"",
                "processors.customer_tier.attributes.plan: the attribute key must not be empty",
                "processors.customer_tier.attributes.region: attribute key \"tier\" clashes with tier_key or customer_id_key",
                "processors.customer_tier.attributes.tier: \"tier\" is not an extra field (the tier is always added under tier_key)",
            ],
        ),
        (
            "dotted keys are named in the message, not the path",
            json!({"source": {"inline": {
                "cust.0001": "", "cust.0002": {"plan": "x"}, "cust[3]": {"tier": "pro", "customer_id": "c"}
            }}, "attributes": {"plan.name": "job", "region": "customer.region"}}),
            vec![
                "processors.customer_tier.source.inline: \"cust.0001\": a tier is required and must not be empty",
                "processors.customer_tier.source.inline: \"cust.0002\".tier: a tier is required and must not be empty",
                "processors.customer_tier.source.inline: \"cust[3]\".customer_id: not allowed here: the map key is the customer id",
                "processors.customer_tier.attributes: \"plan.name\": \"job\" is reserved: Prometheus sets the label \"job\" itself",
            ],
        ),
        (
            "label names",
            json!({"source": {"file": "c.csv"}, "tier_key": "customer.id", "attributes": {
                "a": "1plan", "b": "plan-name", "c": "__meta", "d": "le", "e": "Instance",
                "f": "x.y", "g": "x_y", "h": "x..y", "i": "instance", "j": "quantile.x"
            }}),
            vec![
                "processors.customer_tier.tier_key: \"customer.id\" and customer_id_key \"customer_id\" both become the label \"customer_id\"",
                "processors.customer_tier.attributes.a: \"1plan\" is not a valid label name: use letters, digits, `_` and `.`, starting with a letter or `_`",
                "processors.customer_tier.attributes.b: \"plan-name\" is not a valid label name: use letters, digits, `_` and `.`, starting with a letter or `_`",
                "processors.customer_tier.attributes.c: \"__meta\": names starting with `__` are reserved by Prometheus",
                "processors.customer_tier.attributes.d: \"le\" is reserved: Prometheus sets the label \"le\" itself",
                "processors.customer_tier.attributes.g: attribute key \"x_y\" becomes the label \"x_y\", as field \"f\" \"x.y\" does",
                "processors.customer_tier.attributes.h: attribute key \"x..y\" becomes the label \"x_y\", as field \"f\" \"x.y\" does",
                "processors.customer_tier.attributes.i: \"instance\" is reserved: Prometheus sets the label \"instance\" itself",
            ],
        ),
        (
            "an attribute named like the customer id's label",
            json!({"source": {"file": "c.csv"}, "attributes": {"org": "customer.id"}}),
            vec![
                "processors.customer_tier.attributes.org: attribute key \"customer.id\" becomes the label \"customer_id\", as customer_id_key \"customer_id\" does",
            ],
        ),
        (
            "drop globs",
            json!({"source": {"file": "c.csv"}, "drop_customer_id": {"include": [], "exclude": ["", "vla.[ab]"]}}),
            vec![
                "processors.customer_tier.drop_customer_id.include: must list at least one metric name or glob",
                "processors.customer_tier.drop_customer_id.exclude[0]: must not be empty; write a metric name or a glob such as vla.inference.*",
                "processors.customer_tier.drop_customer_id.exclude[1]: invalid metric pattern \"vla.[ab]\": '[' cannot appear in a metric name; only * is a wildcard",
            ],
        ),
    ];
    for (name, json, want) in cases {
        assert_eq!(problems(json), want, "{name}");
    }
    let err = serde_json::from_value::<Config>(
        json!({"source": {"file": "c.csv"}, "apply_to": "metrics"}),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("unknown variant `metrics`"), "{err}");
    let err = serde_json::from_value::<Config>(json!({"source": {"file": "c.csv", "poll": "1s"}}))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("unknown field `poll`"), "{err}");
}

/// The glob itself is tested in `crate::pattern`.
#[test]
fn drop_filter_is_include_minus_exclude() {
    let f = MetricFilter::new(&DropConfig {
        include: vec!["vla.customer.*".into()],
        exclude: vec!["vla.customer.requests".into()],
    });
    assert!(f.matches("vla.customer.inference.duration"));
    assert!(!f.matches("vla.customer.requests"));
    assert!(!f.matches("vla.inference.requests"));
}
