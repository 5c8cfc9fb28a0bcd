//! The waiting room's admission token keys (`ADMISSION_TOKEN_SECRET`): a secret the stack
//! generates, lent through a CloudFormation dynamic reference to exactly the functions that sign
//! or verify tokens, readable by no function's role, and read again on a deploy that names its
//! new version (a rotation; a plain redeploy would keep the old value).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{ADMISSION_TOKEN_SECRET, REQUIRED_ENV, Template, reference, statements};

/// `{{resolve:secretsmanager:<secret-id>:SecretString:<json-key>:<version-stage>:<version-id>}}`,
/// split into its segments.
fn dynamic_reference(value: &Value) -> Vec<&str> {
    let text = value["Fn::Sub"]
        .as_str()
        .unwrap_or_else(|| panic!("a dynamic reference in an Fn::Sub: {value}"));
    text.strip_prefix("{{resolve:secretsmanager:")
        .and_then(|rest| rest.strip_suffix("}}"))
        .unwrap_or_else(|| panic!("not a secretsmanager dynamic reference: {text}"))
        .split(':')
        .collect()
}

/// Whether `needle` is anywhere in `value`.
fn mentions(value: &Value, needle: &Value) -> bool {
    value == needle
        || match value {
            Value::Array(items) => items.iter().any(|item| mentions(item, needle)),
            Value::Object(map) => map.values().any(|item| mentions(item, needle)),
            _ => false,
        }
}

#[test]
fn the_admission_token_keys_are_generated_and_lent_only_to_the_functions_that_use_them() {
    let template = Template::load();
    let secret = template.resource("AdmissionTokenSecret");
    assert_eq!(secret["Type"], "AWS::SecretsManager::Secret");
    assert!(
        secret.get("Condition").is_none(),
        "every deploy has its keys"
    );
    let generated = &secret["Properties"]["GenerateSecretString"];
    assert!(
        generated.get("SecretStringTemplate").is_none()
            && generated.get("GenerateStringKey").is_none(),
        "the secret's text is the keys themselves, not JSON"
    );
    assert_eq!(
        generated["ExcludePunctuation"], true,
        "a comma in a generated key would split it in two"
    );
    assert!(
        generated["PasswordLength"]
            .as_u64()
            .is_some_and(|length| length >= 32),
        "a key of at least 32 characters for HMAC-SHA256"
    );

    let lent_to: BTreeSet<&str> = REQUIRED_ENV
        .iter()
        .filter(|(_, _, vars)| vars.contains(&ADMISSION_TOKEN_SECRET))
        .map(|(name, _, _)| *name)
        .collect();
    assert_eq!(
        lent_to,
        ["create-hold", "get-queue-entry", "join-queue"].into(),
        "the functions that sign (join, entry) or verify (hold) admission tokens"
    );
    let mut references = Vec::new();
    for (name, id) in template.functions() {
        let env = template.env(&id);
        if lent_to.contains(name.as_str()) {
            references.push(env[ADMISSION_TOKEN_SECRET].clone());
        } else {
            assert!(
                !env.contains_key(ADMISSION_TOKEN_SECRET),
                "{name} gets the admission token keys, which it never uses"
            );
        }
    }
    assert_eq!(references.len(), lent_to.len());
    assert!(
        references.iter().all(|each| *each == references[0]),
        "every function signs and verifies with the same keys: {references:?}"
    );
    assert_eq!(
        dynamic_reference(&references[0]),
        [
            "${AdmissionTokenSecret}",
            "SecretString",
            "",
            "",
            "${AdmissionTokenSecretVersionId}"
        ],
        "the whole secret text (no JSON key), at the version the parameter names (none: current)"
    );

    // The functions get the value at deploy; none of their roles may read the secret itself.
    let secret_ref = json!({"Ref": "AdmissionTokenSecret"});
    for (id, statement) in statements(&template) {
        assert!(
            !mentions(statement, &secret_ref),
            "{id} may read the admission token keys"
        );
    }
    assert_eq!(
        reference(&template.0["Outputs"]["AdmissionTokenSecretArn"]["Value"]),
        Some("AdmissionTokenSecret"),
        "operators find the secret to rotate"
    );
}

/// The version id goes into the reference between colons: empty (the current version) or an id,
/// never anything that would add a segment.
#[test]
fn the_rotation_parameter_names_a_version_or_nothing() {
    let template = Template::load();
    let parameter = &template.0["Parameters"]["AdmissionTokenSecretVersionId"];
    assert_eq!(parameter["Type"], "String");
    assert_eq!(parameter["Default"], "", "the current version unless told");
    let pattern = parameter["AllowedPattern"]
        .as_str()
        .expect("an AllowedPattern");
    // CloudFormation matches an AllowedPattern against the whole value.
    let whole = json!({"type": "string", "pattern": format!("^(?:{pattern})$")});
    let validator = jsonschema::draft202012::options()
        .build(&whole)
        .expect("AllowedPattern is a regular expression");
    for (value, allowed) in [
        ("", true),
        ("a1b2c3d4-5678-90ab-cdef-EXAMPLE11111", true),
        ("AWSPREVIOUS:x", false),
        ("id}}", false),
        ("a b", false),
    ] {
        assert_eq!(validator.is_valid(&json!(value)), allowed, "{value:?}");
    }
}
