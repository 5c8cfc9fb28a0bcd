//! Product reads from a reader: with `ProductReadsFromReader=true` the stack adds an Aurora
//! reader, a read-only endpoint of its RDS Proxy and an alarm on the reader's lag, and get-product (and only it: it writes
//! nothing) connects there; an existing database's read-only endpoint is used the same way. By
//! default nothing of it is made and every function connects to the writer. The waiting room's
//! summary, a public read too, stays on the writer: it shows the pre-queue's draw, which a
//! lagging reader would not have yet.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::Template;
use super::deploy::Deploy;

const READER: [&str; 3] = [
    "DatabaseReaderInstance",
    "DatabaseProxyReadOnlyEndpoint",
    "ReaderReplicaLagAlarm",
];

/// Where each function connects: its `DATABASE_HOST`, the branch this deploy takes.
fn hosts(template: &Template, deploy: &Deploy) -> Vec<(String, Value)> {
    template
        .functions()
        .into_values()
        .filter_map(|id| {
            let host = template.env(&id).get("DATABASE_HOST")?.clone();
            Some((id, deploy.chosen(&host)))
        })
        .collect()
}

/// A deploy's parameters, where get-product and the others connect, whether a reader is made.
type Case<'a> = (&'a [(&'a str, &'a str)], Value, Value, bool);

#[test]
fn product_reads_go_to_a_reader_only_when_asked_and_nothing_else_leaves_the_writer() {
    let template = Template::load();
    let writer = json!({"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]});
    let reader = json!({"Fn::GetAtt": ["DatabaseProxyReadOnlyEndpoint", "Endpoint"]});
    let get_product = template.function_id("get-product");
    let existing = "proxy.example.internal";
    let existing_reads = "reads.example.internal";
    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db";
    let cases: [Case; 4] = [
        (&[], writer.clone(), writer.clone(), false),
        (&[("ProductReadsFromReader", "true")], reader, writer, true),
        (
            &[
                ("ExistingDatabaseProxyEndpoint", existing),
                ("ExistingDatabaseSecretArn", secret),
            ],
            json!({"Ref": "ExistingDatabaseProxyEndpoint"}),
            json!({"Ref": "ExistingDatabaseProxyEndpoint"}),
            false,
        ),
        (
            &[
                ("ExistingDatabaseProxyEndpoint", existing),
                ("ExistingDatabaseSecretArn", secret),
                ("ExistingDatabaseReadOnlyProxyEndpoint", existing_reads),
            ],
            json!({"Ref": "ExistingDatabaseReadOnlyProxyEndpoint"}),
            json!({"Ref": "ExistingDatabaseProxyEndpoint"}),
            false,
        ),
    ];
    for (parameters, reads, writes, makes_reader) in cases {
        let deploy = Deploy::new(&template, "us-east-1", parameters);
        assert!(deploy.accepted(), "the rules refuse {parameters:?}");
        let hosts = hosts(&template, &deploy);
        assert!(hosts.len() > 5, "every function connecting: {hosts:?}");
        for (id, host) in hosts {
            let expected = if id == get_product { &reads } else { &writes };
            assert_eq!(&host, expected, "{id} with {parameters:?}");
        }
        let made: BTreeSet<&str> = READER
            .into_iter()
            .filter(|id| deploy.makes(template.resource(id)))
            .collect();
        let expected: BTreeSet<&str> = if makes_reader {
            READER.into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(made, expected, "{parameters:?}");
    }

    for refused in [
        &[("ExistingDatabaseReadOnlyProxyEndpoint", existing_reads)][..],
        &[
            ("ExistingDatabaseProxyEndpoint", existing),
            ("ExistingDatabaseSecretArn", secret),
            ("ProductReadsFromReader", "true"),
        ][..],
    ] {
        assert!(
            !Deploy::new(&template, "us-east-1", refused).accepted(),
            "{refused:?} is refused: a reader of the other database"
        );
    }
}

#[test]
fn the_read_only_endpoint_is_the_proxys_in_front_of_a_reader_of_the_stacks_cluster() {
    let template = Template::load();
    let endpoint = &template.resource("DatabaseProxyReadOnlyEndpoint")["Properties"];
    assert_eq!(endpoint["TargetRole"], "READ_ONLY");
    assert_eq!(endpoint["DBProxyName"], json!({"Ref": "DatabaseProxy"}));
    assert_eq!(
        endpoint["VpcSecurityGroupIds"],
        template.resource("DatabaseProxy")["Properties"]["VpcSecurityGroupIds"],
        "the functions reach it as they reach the proxy"
    );
    let instance = &template.resource("DatabaseReaderInstance")["Properties"];
    assert_eq!(
        instance["DBClusterIdentifier"],
        json!({"Ref": "DatabaseCluster"})
    );
    assert_eq!(instance["DBInstanceClass"], "db.serverless");
    assert_eq!(
        instance["PromotionTier"], 1,
        "it scales with the writer, warm when the crowd comes"
    );
    let depends: Vec<&str> = template.resource("DatabaseProxyReadOnlyEndpoint")["DependsOn"]
        .as_array()
        .expect("DependsOn")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        depends.contains(&"DatabaseReaderInstance"),
        "a read-only endpoint with no reader refuses connections"
    );
    let alarm = &template.resource("ReaderReplicaLagAlarm")["Properties"];
    assert_eq!(
        (&alarm["Namespace"], &alarm["MetricName"]),
        (&json!("AWS/RDS"), &json!("AuroraReplicaLag"))
    );
    assert_eq!(
        alarm["Dimensions"],
        json!([{"Name": "DBInstanceIdentifier", "Value": {"Ref": "DatabaseReaderInstance"}}]),
        "the lag of the reader the reads go to"
    );
}
