//! Schemas: the structural shape of a contract's records, and validation of record values.
//!
//! A contract's schema file is read once at policy load into a [`shape::Shape`], which serves two
//! purposes: type-checking validity rules at load (so a rule naming a field the schema lacks is a
//! `check` error), and validating JSON values at produce time.

pub mod avro_compat;
pub mod avro_data;
pub mod avro_project;
pub mod classification;
pub mod error;
pub mod json;
pub mod json_project;
pub mod registry;
pub mod registry_client;
pub mod shape;
