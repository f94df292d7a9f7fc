#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;

fn row(id: &str, tier: &str, fields: &[(&str, &str)]) -> RawRow {
    RawRow {
        id: id.into(),
        tier: tier.into(),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn yaml(text: &str) -> Result<Vec<RawRow>, String> {
    parse_file(Path::new("configs/customers.yaml"), text.as_bytes()).map_err(|e| e.to_string())
}

fn csv(text: &str) -> Result<Vec<RawRow>, String> {
    parse_file(Path::new("customers.csv"), text.as_bytes()).map_err(|e| e.to_string())
}

#[test]
fn yaml_list_shape() {
    let got = yaml(
        "# customers of the VLA API\n\
         customers:\n\
         \x20 - customer_id: cust-0001\n\
         \x20   tier: enterprise\n\
         \x20   plan: annual\n\
         \x20   region: eu-west\n\
         \x20 - { customer_id: cust-0002, tier: pro, name: Robo Inc, seats: 12, note: null }\n",
    )
    .unwrap();
    assert_eq!(
        got,
        vec![
            row(
                "cust-0001",
                "enterprise",
                &[("plan", "annual"), ("region", "eu-west")]
            ),
            row("cust-0002", "pro", &[("name", "Robo Inc"), ("seats", "12")]),
        ]
    );
    // The same list at the top level.
    let got = yaml("- {customer_id: a, tier: free}\n").unwrap();
    assert_eq!(got, vec![row("a", "free", &[])]);
}

#[test]
fn yaml_map_shape() {
    let got = yaml(
        "cust-0001: enterprise\n\
         cust-0002:\n\
         \x20 tier: pro\n\
         \x20 plan: monthly\n\
         42: free\n",
    )
    .unwrap();
    assert_eq!(
        got,
        vec![
            row("cust-0001", "enterprise", &[]),
            row("cust-0002", "pro", &[("plan", "monthly")]),
            row("42", "free", &[]),
        ]
    );
    // A customer called `customers` with a tier is a map entry, not the list shape.
    let got = yaml("customers: pro\n").unwrap();
    assert_eq!(got, vec![row("customers", "pro", &[])]);
}

#[test]
fn yaml_errors_name_file_and_line() {
    let cases = [
        (
            "customers:\n  - customer_id: a\n    tier: pro\n  - customer_id: x\n    plan: annual\n",
            "configs/customers.yaml:4: customer \"x\": missing tier",
        ),
        (
            "customers:\n  - {customer_id: a, tier: pro}\n  - {tier: pro}\n",
            "configs/customers.yaml:3: missing customer_id",
        ),
        (
            "customers:\n  - {customer_id: a, tier: pro}\n  - {customer_id: b, tier: free}\n  - {customer_id: a, tier: free}\n",
            "configs/customers.yaml:4: customer \"a\": duplicate (first on line 2)",
        ),
        (
            "a: pro\nb:\n  plan: x\n",
            "configs/customers.yaml:2: customer \"b\": missing tier",
        ),
        (
            "a: pro\nb: ''\n",
            "configs/customers.yaml:2: customer \"b\": missing tier",
        ),
        (
            "a: pro\nb: [pro]\n",
            "configs/customers.yaml:2: customer \"b\": expected a tier or a map of fields, found a list",
        ),
        (
            "customers:\n  - {customer_id: a, tier: pro}\n  - just-a-string\n",
            "configs/customers.yaml:3: expected a customer (a map with customer_id and tier), found a scalar",
        ),
        (
            "customers:\n  - customer_id: a\n    tier: pro\n    plan: [x]\n",
            "configs/customers.yaml:4: field \"plan\": expected a single value, found a list",
        ),
        ("", "configs/customers.yaml: no customers"),
        ("customers: []\n", "configs/customers.yaml: no customers"),
    ];
    for (text, want) in cases {
        assert_eq!(yaml(text).unwrap_err(), want, "{text}");
    }
    let syntax =
        yaml("customers:\n  - {customer_id: a, tier: pro}\n  - {customer_id: b\n").unwrap_err();
    assert_eq!(
        syntax,
        "configs/customers.yaml:3: unclosed bracket '{' (column 5)"
    );
    assert_eq!(
        yaml("a: pro\nb: free\na: free\n").unwrap_err(),
        "configs/customers.yaml:3: duplicate mapping key: a (column 1)"
    );
}

#[test]
fn csv_format() {
    let got = csv("# exported from billing\n\
         tier,customer_id,plan,region\n\
         enterprise, cust-0001 ,annual,eu-west\n\
         pro,cust-0002,,us-east\n")
    .unwrap();
    assert_eq!(
        got,
        vec![
            row(
                "cust-0001",
                "enterprise",
                &[("plan", "annual"), ("region", "eu-west")]
            ),
            row("cust-0002", "pro", &[("plan", ""), ("region", "us-east")]),
        ]
    );
}

#[test]
fn csv_errors_name_file_and_line() {
    let cases = [
        (
            "customer_id,tier\na,pro\nb,\n",
            "customers.csv:3: customer \"b\": missing tier",
        ),
        (
            "customer_id,tier\na,pro\nb,free\na,free\n",
            "customers.csv:4: customer \"a\": duplicate (first on line 2)",
        ),
        (
            "customer_id,tier\na,pro\nb,free,extra\n",
            "customers.csv:3: expected 2 fields like the header, found 3",
        ),
        (
            "id,tier\na,pro\n",
            "customers.csv:1: the header must name the columns customer_id and tier, found: id,tier",
        ),
        ("customer_id,tier\n", "customers.csv: no customers"),
        (
            "customer_id,tier\n,pro\n",
            "customers.csv:2: missing customer_id",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(csv(text).unwrap_err(), want, "{text}");
    }
}

#[test]
fn table_keeps_the_configured_extra_fields() {
    let rows = vec![
        row("a", "pro", &[("plan", "annual"), ("region", "eu")]),
        row("b", "free", &[("plan", "")]),
    ];
    let t = Table::build(rows, &["region".into(), "plan".into()]);
    assert_eq!(t.len(), 2);
    let a = t.get("a").unwrap();
    assert_eq!(&*a.tier, "pro");
    assert_eq!(
        a.extra.iter().map(|v| v.as_deref()).collect::<Vec<_>>(),
        vec![Some("eu"), Some("annual")]
    );
    let b = t.get("b").unwrap();
    assert_eq!(
        b.extra.iter().map(|v| v.as_deref()).collect::<Vec<_>>(),
        vec![None, None]
    );
    assert!(t.get("c").is_none());
}

#[test]
fn inline_rows() {
    let inline = BTreeMap::from([
        ("a".to_owned(), InlineCustomer::Tier("enterprise".into())),
        (
            "b".to_owned(),
            InlineCustomer::Fields(BTreeMap::from([
                ("tier".to_owned(), "pro".to_owned()),
                ("plan".to_owned(), "annual".to_owned()),
            ])),
        ),
    ]);
    assert_eq!(
        rows_from_inline(&inline).unwrap(),
        vec![
            row("a", "enterprise", &[]),
            row("b", "pro", &[("plan", "annual")])
        ]
    );
    let bad = BTreeMap::from([("c".to_owned(), InlineCustomer::Tier(" ".into()))]);
    assert_eq!(
        rows_from_inline(&bad).unwrap_err().to_string(),
        "inline customer \"c\": missing tier"
    );
}
