//! Tokenising a normalised value (n-grams, positional unigrams, exact, numeric).
