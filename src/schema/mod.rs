//! The linkage schema: which identifying fields are encoded and how.
//!
//! Reads the clkhash v3 linkage-schema JSON as it is, plus pprl's native
//! extensions, validates it once into a [`Schema`] that the rest of the engine
//! uses, and gives its fingerprint (a hash of the canonical schema).
