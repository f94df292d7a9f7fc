//! Label values: enums for the closed sets, validated strings for the open ones.
//!
//! Every label the SDK writes comes from one of these types, so a wrong value cannot reach
//! the wire: a closed set is an enum (a typo does not compile), an open one is a string checked
//! once when it is made (`ModelName::new("pi0")?`) and cheap to clone afterwards.
//!
//! ```compile_fail
//! // A closed set takes no free text: `Tier` is an enum, not a string.
//! let tier: vla_sdk::Tier = "platinum";
//! ```
//!
//! ```compile_fail
//! // An open value is only made through its checking constructor.
//! let model = vla_sdk::ModelName("Robot Model v2 (beta)".into());
//! ```

use std::fmt;
use std::sync::Arc;

use opentelemetry::{StringValue, Value};

/// Defines a closed label set: an enum with its wire strings, `ALL`, `as_str` and `Display`.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in catalogue order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The wire strings of every value, in catalogue order.
            pub const VALUES: &'static [&'static str] = &[$($wire),+];

            /// The label value written on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = LabelError;

            fn from_str(s: &str) -> Result<Self, LabelError> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(LabelError::NotInSet {
                        label: stringify!($name),
                        value: s.to_owned(),
                        allowed: Self::VALUES,
                    }),
                }
            }
        }
    };
}

/// A label value that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// An open value broke its rule (length or characters).
    #[error("{label} {value:?} is not valid: {rule}")]
    Invalid {
        /// Which kind of value.
        label: &'static str,
        /// What was given.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// A closed-set value was not one of the set.
    #[error("{label} {value:?} is not one of {allowed:?}")]
    NotInSet {
        /// Which set.
        label: &'static str,
        /// What was given.
        value: String,
        /// The values the set has.
        allowed: &'static [&'static str],
    },
}

label_enum! {
    /// The customer's plan.
    Tier {
        /// Free plan.
        Free => "free",
        /// Entry paid plan.
        Starter => "starter",
        /// Professional plan.
        Pro => "pro",
        /// Enterprise contract.
        Enterprise => "enterprise",
    }
}

label_enum! {
    /// How an inference request ended (`status` on request counters).
    Status {
        /// The model answered with an action.
        Success => "success",
        /// The request failed in the model or the serving path.
        Error => "error",
        /// The safety check refused the instruction or the action.
        Rejected => "rejected",
        /// The request failed validation before reaching a model.
        Invalid => "invalid",
        /// The customer was over their rate limit.
        RateLimited => "rate_limited",
    }
}

label_enum! {
    /// Why a request that reached the model failed (`error_type`).
    ErrorType {
        /// The model did not answer within the deadline.
        Timeout => "timeout",
        /// The GPU ran out of memory.
        GpuOom => "gpu_oom",
        /// The model raised an error.
        ModelError => "model_error",
        /// The model's output could not be turned into an action.
        InvalidOutput => "invalid_output",
        /// Anything else in the serving path.
        Internal => "internal",
    }
}

label_enum! {
    /// Why a request failed validation (`reason`).
    ValidationReason {
        /// The camera frame is not a supported image format.
        ImageFormat => "image_format",
        /// The camera frame is too large or too small.
        ImageSize => "image_size",
        /// The instruction is empty.
        InstructionEmpty => "instruction_empty",
        /// The instruction is longer than allowed.
        InstructionTooLong => "instruction_too_long",
        /// The robot type is not served.
        UnknownRobotType => "unknown_robot_type",
        /// The request body does not match the schema.
        Schema => "schema",
    }
}

label_enum! {
    /// Severity of a safety incident.
    Severity {
        /// Logged only.
        Low => "low",
        /// Reviewed in the daily report.
        Medium => "medium",
        /// Reviewed the same day.
        High => "high",
        /// Pages the safety team.
        Critical => "critical",
    }
}

label_enum! {
    /// What a safety check found (`violation_type`).
    ViolationType {
        /// The planned motion may collide with an object.
        CollisionRisk => "collision_risk",
        /// The motion leaves the allowed workspace.
        WorkspaceBoundary => "workspace_boundary",
        /// A commanded force is above the limit.
        ForceLimit => "force_limit",
        /// A commanded speed is above the limit.
        SpeedLimit => "speed_limit",
        /// A person is too close to the robot.
        HumanProximity => "human_proximity",
        /// The instruction targets a restricted object.
        RestrictedObject => "restricted_object",
        /// The instruction itself asks for harm.
        HarmfulInstruction => "harmful_instruction",
    }
}

label_enum! {
    /// Where a safety check ran (`stage`).
    SafetyStage {
        /// On the instruction, before the model runs.
        Instruction => "instruction",
        /// On the model's action, before it is returned.
        Action => "action",
    }
}

label_enum! {
    /// The result of a human review of a safety incident (`outcome`).
    ReviewOutcome {
        /// The incident was real.
        Confirmed => "confirmed",
        /// The check fired on a safe request.
        FalsePositive => "false_positive",
    }
}

label_enum! {
    /// What kind of task the instruction asks for (`instruction_category`).
    InstructionCategory {
        /// Pick an object and place it.
        PickPlace => "pick_place",
        /// Move the robot base.
        Navigation => "navigation",
        /// Dexterous manipulation (open, turn, pour).
        Manipulation => "manipulation",
        /// Assemble parts.
        Assembly => "assembly",
        /// Look at or measure something.
        Inspection => "inspection",
        /// Anything else.
        Other => "other",
    }
}

label_enum! {
    /// A customer's rating of a response (`rating`).
    Rating {
        /// Thumbs up.
        Positive => "positive",
        /// Thumbs down.
        Negative => "negative",
    }
}

label_enum! {
    /// A part of the service whose health check is reported (`component`).
    Component {
        /// The HTTP API itself.
        Api => "api",
        /// The inference workers.
        InferenceWorker => "inference_worker",
        /// The PostgreSQL database.
        Database => "database",
        /// The Redis cache.
        Cache => "cache",
    }
}

/// The longest open label value the SDK accepts.
pub const MAX_OPEN_VALUE_LEN: usize = 64;

/// The rule every open label value follows.
pub const OPEN_VALUE_RULE: &str = "1 to 64 characters of a-z, A-Z, 0-9, '.', '_' and '-'";

fn check_open(label: &'static str, value: &str) -> Result<Arc<str>, LabelError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_OPEN_VALUE_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(Arc::from(value))
    } else {
        Err(LabelError::Invalid {
            label,
            value: value.to_owned(),
            rule: OPEN_VALUE_RULE,
        })
    }
}

/// Defines a validated open label value backed by a shared string.
macro_rules! open_value {
    ($(#[$meta:meta])* $name:ident, $label:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `value` against the open-value rule.
            pub fn new(value: &str) -> Result<Self, LabelError> {
                check_open($label, value).map(Self)
            }

            /// The value as written on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub(crate) fn otel_value(&self) -> Value {
                Value::String(StringValue::from(self.0.clone()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = LabelError;

            fn from_str(s: &str) -> Result<Self, LabelError> {
                Self::new(s)
            }
        }
    };
}

open_value!(
    /// A model's name, e.g. `pi0` or `openvla-7b` (label `model`).
    ModelName,
    "model"
);
open_value!(
    /// A robot type, e.g. `franka-panda` or `ur5e` (label `robot_type`).
    RobotType,
    "robot_type"
);
open_value!(
    /// A customer's id (label `customer_id`), written only on the metrics the catalogue marks
    /// as per-customer, and capped per process by the builder's `max_customers`.
    CustomerId,
    "customer_id"
);

/// A GPU's index on its host (label `gpu_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GpuId(pub u32);

impl fmt::Display for GpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sets_round_trip_their_wire_strings() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>(), Ok(*t));
        }
        assert_eq!(Status::RateLimited.as_str(), "rate_limited");
        assert_eq!(Tier::VALUES, ["free", "starter", "pro", "enterprise"]);
        let err = "platinum".parse::<Tier>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Tier "platinum" is not one of ["free", "starter", "pro", "enterprise"]"#
        );
    }

    #[test]
    fn open_values_are_checked() {
        assert_eq!(
            ModelName::new("openvla-7b.v2_1").unwrap().as_str(),
            "openvla-7b.v2_1"
        );
        for bad in ["", "has space", "slash/x", "ünï", &"x".repeat(65)] {
            let err = ModelName::new(bad).unwrap_err();
            assert!(
                matches!(err, LabelError::Invalid { label: "model", .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(CustomerId::new(&"c".repeat(64)).is_ok());
        assert_eq!(
            RobotType::new("a b").unwrap_err().to_string(),
            format!("robot_type \"a b\" is not valid: {OPEN_VALUE_RULE}")
        );
    }
}
