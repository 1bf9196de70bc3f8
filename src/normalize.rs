//! Normalisation of field values before tokenising.
