//! Manifests: the typed model of `celeroot.io/v1` objects and loading them from YAML.
//!
//! Owns: the object model (`types`), the located YAML node tree (`node`, `yaml`), turning
//! files into typed objects with located diagnostics (`load`), and the JSON Schemas
//! generated from the model (`schema`), the value syntax of fields (`values`: durations,
//! cron expressions, time zones) and the host index (`index`) that `validate` and
//! `desired` share.
//! Must not know: where files come from (git or disk: `source`), cross-object rules
//! (`validate`), Redis, or hosts.

mod index;
mod load;
mod node;
pub mod schema;
mod types;
pub mod values;
pub mod yaml;

pub use index::{selects, HostIndex};
pub use load::{load_files, LoadedFiles, Object, ObjectBody};
pub use node::{decode, did_you_mean, node_to_json, DecodeError, Located, Node, Pos, Value};
pub use types::*;
