//! The default schema written by `pprl schema init`: pprl's native scheme for
//! health identifiers, with column names as in Febrl (the synthetic data the
//! engine is tested on). Its bit budgets were tuned on Febrl4 (see the
//! `febrl4_default_schema` test).

/// The default schema of `pprl schema init` (JSON text).
///
/// Every feature is normalised, hashed with keyed BLAKE3 ("random hashing",
/// k independent positions per token), keyed per identifier (`BLAKE3` kdf),
/// and has the empty value as its missing-value sentinel, so a missing field
/// sets no bits instead of refusing the record. Text fields use bigrams,
/// numbers positional unigrams, the state an exact match. The national
/// register number (`soc_sec_id`) is included: it is the most discriminating
/// identifier when present. `rec_id` is the site's record key and is never
/// encoded. Hardening (balance, BLIP, salting) is off: turn it on per project.
pub fn default_schema_json() -> String {
    DEFAULT_SCHEMA.to_owned()
}

const DEFAULT_SCHEMA: &str = r#"{
  "version": 3,
  "clkConfig": {
    "l": 1024,
    "kdf": {"type": "BLAKE3"}
  },
  "features": [
    {
      "identifier": "rec_id",
      "ignored": true,
      "description": "the site's own record key: never encoded"
    },
    {
      "identifier": "given_name",
      "description": "first given name",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 200},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "surname",
      "description": "family name",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 200},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "street_number",
      "description": "house number of the address",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 1, "positional": true},
        "strategy": {"bitsPerFeature": 60},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "address_1",
      "description": "street name and type",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 120},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "address_2",
      "description": "address complement (building, locality)",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 80},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "suburb",
      "description": "town or suburb",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 100},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "postcode",
      "description": "postal code",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 1, "positional": true},
        "strategy": {"bitsPerFeature": 80},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "state",
      "description": "state or region code",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "exact"},
        "strategy": {"bitsPerFeature": 30},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "date_of_birth",
      "description": "date of birth; encoded as YYYYMMDD whatever the input format; a value that is not a valid date is encoded as written",
      "normalize": {"removePunctuation": false},
      "onInvalid": "keep",
      "format": {
        "type": "date",
        "format": "%Y%m%d",
        "acceptedFormats": ["%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y"]
      },
      "hashing": {
        "comparison": {"type": "ngram", "n": 1, "positional": true},
        "strategy": {"bitsPerFeature": 200},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "soc_sec_id",
      "description": "national register number (social security id)",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 1, "positional": true},
        "strategy": {"bitsPerFeature": 150},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    }
  ]
}
"#;
