//! Release: a site's payload joined to its entity ids, for analysts.
