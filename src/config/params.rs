//! A pipeline's parameters: `[pipeline.params] NAME = { default, description, choices }`,
//! and the values one run is given (`pipewatch run --param NAME=VALUE`, the API's
//! `{"params": {...}}`), checked against them ([`resolve`]). Stages see each as
//! `PIPEWATCH_PARAM_<NAME>` (the name upper-cased, [`env_name`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Param {
    pub name: String,
    /// The value of a run that is not given one (a scheduled run, say).
    pub default: String,
    /// For people: what the value means.
    pub description: String,
    /// The only values allowed; empty: any.
    pub choices: Vec<String>,
}

/// `NAME = { default = "...", description = "...", choices = [...] }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    default: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    choices: Option<Spanned<Vec<String>>>,
}

/// The names a parameter may have: they become part of an environment variable's name.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// What a value may not hold: an environment variable cannot carry a NUL.
fn value_problem(value: &str) -> Option<&'static str> {
    value.contains('\0').then_some("holds a NUL character")
}

/// `PIPEWATCH_PARAM_<NAME>`: the variable a stage reads the parameter from.
pub fn env_name(name: &str) -> String {
    format!("PIPEWATCH_PARAM_{}", name.to_ascii_uppercase())
}

/// Validates the declared parameters: each error is `(byte offset, key, message)` for the
/// caller to place in its file.
pub(super) fn declared(
    raw: BTreeMap<Spanned<String>, Spanned<RawParam>>,
) -> Result<Vec<Param>, (usize, String, String)> {
    let mut params: Vec<Param> = Vec::with_capacity(raw.len());
    for (name, param) in raw {
        let at = name.span().start;
        let name = name.into_inner();
        let key = format!("pipeline.params.{name}");
        if !valid_name(&name) {
            return Err((
                at,
                key,
                "invalid parameter name: use a letter, then letters, digits or `_` (at most 64; \
                 stages read it as PIPEWATCH_PARAM_<NAME>)"
                    .to_string(),
            ));
        }
        if let Some(other) = params.iter().find(|p| p.name.eq_ignore_ascii_case(&name)) {
            return Err((
                at,
                key,
                format!(
                    "{name} and {} are the same variable {}: rename one",
                    other.name,
                    env_name(&name)
                ),
            ));
        }
        let param_at = param.span().start;
        let raw = param.into_inner();
        let Some(default) = raw.default else {
            return Err((
                param_at,
                key,
                "missing `default`: the value of a run that is not given one (a scheduled run)"
                    .to_string(),
            ));
        };
        let (default_at, default) = (default.span().start, default.into_inner());
        let choices = match raw.choices {
            Some(c) if c.get_ref().is_empty() => {
                return Err((
                    c.span().start,
                    format!("{key}.choices"),
                    "empty: list the values allowed, or leave `choices` out for any value"
                        .to_string(),
                ));
            }
            Some(c) => c.into_inner(),
            None => Vec::new(),
        };
        for v in choices.iter().chain([&default]) {
            if let Some(problem) = value_problem(v) {
                return Err((param_at, key, format!("the value {v:?} {problem}")));
            }
        }
        if !choices.is_empty() && !choices.contains(&default) {
            return Err((
                default_at,
                format!("{key}.default"),
                format!(
                    "{default:?} is not one of its choices: {}",
                    choices.join(", ")
                ),
            ));
        }
        params.push(Param {
            name,
            default,
            description: raw.description,
            choices,
        });
    }
    Ok(params)
}

/// A value given to a run that its pipeline does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

impl crate::exit::Code for ParamError {
    /// The value is the user's to fix: nothing was run.
    fn exit_code(&self) -> u8 {
        crate::exit::USAGE
    }
}

/// The value of every declared parameter for one run: those `given` (as `NAME=VALUE` pairs,
/// each name at most once), the defaults for the rest. An undeclared name, a value outside
/// the choices or one given twice is refused, naming what is allowed.
pub fn resolve(
    declared: &[Param],
    given: &[(String, String)],
) -> Result<BTreeMap<String, String>, ParamError> {
    let mut values: BTreeMap<String, String> = declared
        .iter()
        .map(|p| (p.name.clone(), p.default.clone()))
        .collect();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in given {
        let Some(param) = declared.iter().find(|p| p.name == *name) else {
            let known: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
            return Err(ParamError(if known.is_empty() {
                format!(
                    "unknown parameter {name:?}: this pipeline declares none ([pipeline.params])"
                )
            } else {
                format!(
                    "unknown parameter {name:?}: the parameters are {}",
                    known.join(", ")
                )
            }));
        };
        if seen.contains(&name.as_str()) {
            return Err(ParamError(format!("parameter {name:?} is given twice")));
        }
        seen.push(name);
        if let Some(problem) = value_problem(value) {
            return Err(ParamError(format!(
                "parameter {name:?}: the value {problem}"
            )));
        }
        if !param.choices.is_empty() && !param.choices.contains(value) {
            return Err(ParamError(format!(
                "parameter {name:?}: {value:?} is not one of {}",
                param.choices.join(", ")
            )));
        }
        values.insert(name.clone(), value.clone());
    }
    Ok(values)
}

/// `NAME=VALUE` as written on the command line.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, not {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<Param> {
        vec![
            Param {
                name: "region".into(),
                default: "eu".into(),
                description: "where".into(),
                choices: vec!["eu".into(), "us".into()],
            },
            Param {
                name: "day".into(),
                default: "today".into(),
                description: String::new(),
                choices: Vec::new(),
            },
        ]
    }

    #[test]
    fn defaults_fill_in_and_given_values_are_checked() {
        let d = declared();
        let v = resolve(&d, &[]).unwrap();
        assert_eq!(v["region"], "eu");
        assert_eq!(v["day"], "today");
        let v = resolve(
            &d,
            &[
                ("region".into(), "us".into()),
                ("day".into(), "2026-12-01".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            (v["region"].as_str(), v["day"].as_str()),
            ("us", "2026-12-01")
        );

        let e = resolve(&d, &[("regoin".into(), "us".into())]).unwrap_err();
        assert!(e.0.contains("the parameters are region, day"), "{e}");
        let e = resolve(&d, &[("region".into(), "asia".into())]).unwrap_err();
        assert!(e.0.contains("not one of eu, us"), "{e}");
        let twice = [("day".into(), "a".into()), ("day".into(), "b".into())];
        assert!(resolve(&d, &twice).unwrap_err().0.contains("twice"));
        assert!(resolve(&d, &[("day".into(), "a\0b".into())]).is_err());
        assert!(
            resolve(&[], &[("x".into(), "1".into())])
                .unwrap_err()
                .0
                .contains("declares none")
        );
    }

    #[test]
    fn names_become_variables() {
        assert_eq!(env_name("region"), "PIPEWATCH_PARAM_REGION");
        assert!(valid_name("day_2"));
        assert!(!valid_name("2day"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_pair("a=").unwrap(), ("a".into(), String::new()));
        assert!(parse_pair("=b").is_err());
        assert!(parse_pair("ab").is_err());
    }
}
