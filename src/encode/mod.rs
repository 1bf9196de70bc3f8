//! Encoding: one record's identifying fields -> one Bloom filter ("clk").
//!
//! For each feature of the [`Schema`], a value is normalised (native schemas),
//! checked against its missing-value sentinel, validated and reformatted
//! (`value.rs`), tokenised ([`crate::tokenize`]), and every token sets k bits
//! through the feature's keyed hash (`hashing.rs`, keys from `keys.rs`); then
//! the record-level hardening runs (`harden.rs`: XOR folding, BLIP,
//! balancing). The result is
//! handed on as `filter_bytes()` bytes, bit `i` of the filter being bit
//! `7 - i % 8` of byte `i / 8` (clkhash's order).
//!
//! [`Encoder`] is the fast path: keyed hash states built once, buffers reused
//! per thread, bits set in `u64` words, and per-thread memos (`cache.rs`) of
//! each feature's values and tokens, so that a frequent value or token is
//! hashed once per thread. [`mod@reference`] is a plain implementation of the
//! same encoding, which the fast path is tested against.

pub mod blocking;
mod cache;
mod harden;
mod hashing;
mod keys;
pub mod reference;
mod value;

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::schema::{Feature, FeatureSpec, Format, Schema, Strategy, TextEncoding};
use crate::secret::Secret;
use crate::tokenize::{self, AsciiGram, TokenizeError, Tokens, tokenize};
use cache::{Memos, Run};
use hashing::{FieldHasher, set_bit};

/// Bytes of memo per thread and encoder, unless [`Encoder::with_memo_budget`]
/// says otherwise.
pub const DEFAULT_MEMO_BUDGET: usize = 32 << 20;

/// Bytes of memo that all the threads of one run share (see
/// [`memo_budget_per_thread`]).
pub const MEMO_BUDGET_ALL_THREADS: usize = 512 << 20;

/// The least memo a thread gets, however many threads share
/// [`MEMO_BUDGET_ALL_THREADS`]: enough for the tokens and the common values
/// (names, postcodes), whose memos save the most.
pub const MIN_MEMO_BUDGET: usize = 4 << 20;

/// The memo budget of each of `threads` threads encoding one input: an equal
/// share of [`MEMO_BUDGET_ALL_THREADS`], between [`MIN_MEMO_BUDGET`] and
/// [`DEFAULT_MEMO_BUDGET`]. Each thread fills its own memos, so on a
/// many-core machine memory would otherwise grow with the thread count (64
/// threads took 1.3 GiB on 10 million distinct people); up to 16 threads
/// each keeps the default.
pub fn memo_budget_per_thread(threads: usize) -> usize {
    (MEMO_BUDGET_ALL_THREADS / threads.max(1)).clamp(MIN_MEMO_BUDGET, DEFAULT_MEMO_BUDGET)
}

/// How many encoders' memos one thread keeps (the least recently used goes).
const MEMOS_PER_THREAD: usize = 4;

/// Source of [`Encoder`] identities (never reused, unlike addresses).
static NEXT_ENCODER_ID: AtomicU64 = AtomicU64::new(0);

/// Encodes records with one schema and one secret. `Send + Sync` and cheap to
/// share across threads: each thread reuses its own scratch buffers and keeps
/// its own memos of this encoder's values and tokens (see
/// [`Encoder::with_memo_budget`]). `Debug` shows no key and no value.
pub struct Encoder {
    l: usize,
    hash_bits: usize,
    xor_folds: u32,
    filter_bits: usize,
    n_features: usize,
    fields: Vec<FieldPlan>,
    /// Ignored features that salt another feature.
    blip: Option<Blip>,
    balance: Option<Vec<u32>>,
    /// Identity of this encoder's memos in each thread's scratch.
    id: u64,
    /// Dropped with the encoder, so threads can tell its memos are dead.
    alive: Arc<()>,
    memo_budget: usize,
}

/// BLIP settings: flip threshold on 32-bit draws, and the stream key.
struct Blip {
    threshold: u64,
    key: [u8; 32],
}

/// One encoded feature, ready to go.
struct FieldPlan {
    index: usize,
    identifier: String,
    spec: FeatureSpec,
    /// For salts that come from an ignored feature.
    salt_from_ignored: bool,
    /// The salt's source: its feature index, and its position in `fields`
    /// unless it is ignored.
    salt_source: Option<(usize, Option<usize>)>,
    /// Unsalted tokens hashed as their UTF-8 bytes: those of ASCII values
    /// that [`tokenize::ascii_grams`] names take the [`cache::Grams`] table.
    short_grams: bool,
    hasher: FieldHasher,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("filter_bits", &self.filter_bits)
            .field(
                "features",
                &self
                    .fields
                    .iter()
                    .map(|p| p.identifier.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("memo_budget", &self.memo_budget)
            .finish_non_exhaustive()
    }
}

/// A field value that the schema refuses. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{feature}`: {reason}")]
pub struct FieldError {
    /// The feature's identifier.
    pub feature: String,
    /// Why the value was refused.
    pub reason: RejectReason,
}

/// Why a value was refused. `Display` never shows the value (it goes into
/// reject files and logs at the site).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// A value is absent or empty, and the feature has no missing-value
    /// sentinel that allows it.
    #[error("value is missing")]
    Missing,
    /// Shorter than the schema's `minLength` (in characters).
    #[error("value has {len} characters, fewer than the minimum {min}")]
    TooShort { min: usize, len: usize },
    /// Longer than the schema's `maxLength` (in characters).
    #[error("value has {len} characters, more than the maximum {max}")]
    TooLong { max: usize, len: usize },
    /// Does not match the schema's `pattern`.
    #[error("value does not match the pattern {pattern:?}")]
    PatternMismatch { pattern: String },
    /// Not an integer (integer format).
    #[error("value is not an integer")]
    NotAnInteger,
    /// An integer outside `[minimum, maximum]`.
    #[error(
        "value is out of range (minimum {}, maximum {})",
        show(minimum),
        show(maximum)
    )]
    OutOfRange {
        minimum: Option<i64>,
        maximum: Option<i64>,
    },
    /// Not a date in the expected format.
    #[error("value is not a valid date in the format {expected_format}")]
    BadDate { expected_format: String },
    /// Not one of the schema's enum values.
    #[error("value is not one of the allowed values")]
    NotInEnum,
    /// Not in the required case.
    #[error("value is not in {expected} case")]
    WrongCase { expected: String },
    /// Not a number (numeric comparison).
    #[error("value is not a number")]
    NotANumber,
    /// Not representable in the declared character encoding.
    #[error("value cannot be encoded as {encoding}")]
    BadEncoding { encoding: String },
}

fn show(bound: &Option<i64>) -> String {
    bound.map_or_else(|| "none".to_owned(), |b| b.to_string())
}

/// Per-thread buffers, reused from record to record.
#[derive(Default)]
struct Buffers {
    /// The record's filter words.
    words: Vec<u64>,
    /// One feature's words, while they are computed for the value memo.
    feature_words: Vec<u64>,
    /// Per encoded feature: the value memo's key and what its look-up gave.
    memo_keys: Vec<Vec<u8>>,
    lookups: Vec<Lookup>,
    text: TextBuffers,
    spare_words: Vec<u64>,
    bytes: Vec<u8>,
    /// Whether a memo stored something for this record.
    stored: bool,
}

/// The record's prepared values and what tokenising and hashing them needs.
#[derive(Default)]
struct TextBuffers {
    /// Prepared values, by feature index.
    values: Vec<String>,
    tmp: String,
    salt: String,
    salt_prefix: Vec<u8>,
    tokens: Tokens,
    token_bytes: Vec<u8>,
    message: Vec<u8>,
    /// One gram's text, when the `Grams` table needs its positions.
    token: String,
}

/// What the value memo said about one feature of the record.
#[derive(Debug, Clone, Copy, Default)]
enum Lookup {
    /// Not looked up (no memo, or paused): the value is prepared.
    #[default]
    Off,
    /// Stored: the value is valid, not prepared, and its words are in the memo.
    Hit(Run),
    /// Not stored: the value is prepared, and its words go into the memo.
    Miss,
    /// Stored in a memo too large for the caches, looked up before the
    /// others: as `Hit`, but its words are read after every other feature's.
    Far(Run),
}

/// One encoder's memos on one thread.
struct ThreadMemos {
    encoder: u64,
    alive: Weak<()>,
    memos: Memos,
}

/// Everything a thread keeps between records.
#[derive(Default)]
struct Scratch {
    buffers: Buffers,
    /// Least recently used first.
    memos: Vec<ThreadMemos>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The value memo's key of a feature: its raw value, or for a salted
/// feature the key built in `salted` (raw value, 0xFF, salt source's raw value).
fn value_key<'a>(plan: &FieldPlan, values: &[Option<&'a str>], salted: &'a [u8]) -> &'a [u8] {
    match plan.salt_source {
        Some(_) => salted,
        None => values[plan.index].unwrap_or("").as_bytes(),
    }
}

/// The most bits one token of a feature can set.
fn max_bits_per_token(strategy: Strategy) -> usize {
    match strategy {
        Strategy::BitsPerToken(k) | Strategy::BitsPerFeature(k) => k as usize,
    }
}

/// The salt prefix hashed before every token of a salted feature: the salt's
/// length (u32, little-endian) and its UTF-8 bytes, so that no salt is a
/// prefix of another.
pub(crate) fn write_salt_prefix(salt: &str, length: Option<usize>, out: &mut Vec<u8>) {
    let salt = match length {
        Some(n) => match salt.char_indices().nth(n) {
            Some((end, _)) => &salt[..end],
            None => salt,
        },
        None => salt,
    };
    out.clear();
    out.extend_from_slice(&(salt.len() as u32).to_le_bytes());
    out.extend_from_slice(salt.as_bytes());
}

impl Encoder {
    /// Derives every key and builds the keyed hash states of every feature.
    pub fn new(schema: &Schema, secret: &Secret) -> Encoder {
        let keys = keys::feature_keys(schema, secret);
        let fields = schema
            .features()
            .iter()
            .enumerate()
            .filter_map(|(index, feature): (usize, &Feature)| {
                let spec = feature.spec()?.clone();
                let salt_from_ignored = spec
                    .salt
                    .as_ref()
                    .is_some_and(|s| schema.features()[s.source].is_ignored());
                let salt_source = spec.salt.as_ref().map(|s| {
                    let position = schema.features()[..s.source]
                        .iter()
                        .filter(|f| f.spec().is_some())
                        .count();
                    (s.source, (!salt_from_ignored).then_some(position))
                });
                let short_grams = spec.salt.is_none()
                    && !matches!(
                        spec.format,
                        Format::String {
                            encoding: TextEncoding::Utf16 | TextEncoding::Utf32,
                            ..
                        }
                    );
                Some(FieldPlan {
                    short_grams,
                    index,
                    identifier: feature.identifier().to_owned(),
                    hasher: FieldHasher::new(
                        spec.hash,
                        &keys[index],
                        max_bits_per_token(spec.strategy),
                        schema.hash_bits(),
                    ),
                    spec,
                    salt_from_ignored,
                    salt_source,
                })
            })
            .collect();
        let hardening = schema.hardening();
        Encoder {
            l: schema.l(),
            hash_bits: schema.hash_bits(),
            xor_folds: schema.xor_folds(),
            filter_bits: schema.filter_bits(),
            n_features: schema.features().len(),
            fields,
            blip: hardening.blip.map(|p| Blip {
                threshold: harden::blip_threshold(p),
                key: keys::blip_key(secret),
            }),
            balance: hardening
                .balance
                .then(|| keys::balance_permutation(secret, 2 * schema.l())),
            id: NEXT_ENCODER_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            memo_budget: DEFAULT_MEMO_BUDGET,
        }
    }

    /// Sets the bytes of memo each thread may keep for this encoder (shared
    /// by the features' value and token memos; 0 turns memos off). A thread's
    /// memos grow to what its records need, up to this.
    /// The output is the same whatever the budget; a larger one remembers
    /// more values and tokens. The default is [`DEFAULT_MEMO_BUDGET`].
    #[must_use]
    pub fn with_memo_budget(mut self, bytes: usize) -> Encoder {
        self.memo_budget = bytes;
        // Memos already made for the old budget are not reused, and are
        // dropped as those of a dropped encoder.
        self.id = NEXT_ENCODER_ID.fetch_add(1, Ordering::Relaxed);
        self.alive = Arc::new(());
        self
    }

    /// Bits in each clk.
    pub fn filter_bits(&self) -> usize {
        self.filter_bits
    }

    /// Bytes in each clk.
    pub fn filter_bytes(&self) -> usize {
        self.filter_bits.div_ceil(8)
    }

    /// Encodes one record; `values[i]` is the raw value of
    /// `schema.features()[i]`, `None` for null or absent (read as the empty
    /// value). Ignored features' values are not encoded, but may serve as salt.
    ///
    /// # Errors
    /// A [`FieldError`] for the first feature (in schema order) whose value
    /// the schema refuses.
    ///
    /// # Panics
    /// If `values.len()` differs from the number of features of the schema.
    pub fn encode(&self, values: &[Option<&str>]) -> Result<Vec<u8>, FieldError> {
        let mut out = vec![0; self.filter_bytes()];
        self.encode_into(values, &mut out)?;
        Ok(out)
    }

    /// Encodes one record into `out`, overwriting it.
    ///
    /// # Errors
    /// As [`Encoder::encode`]; `out` is then left zeroed.
    ///
    /// # Panics
    /// If `values.len()` differs from the number of features, or
    /// `out.len() != filter_bytes()`.
    pub fn encode_into(&self, values: &[Option<&str>], out: &mut [u8]) -> Result<(), FieldError> {
        self.encode_into_ahead(values, out, &|_| None)
    }

    /// As [`Encoder::encode_into`], and starts fetching what the memos hold
    /// for the record this thread encodes next: `next(i)` is the raw value of
    /// feature `i` of that record, `None` when null or when there is no next
    /// record. The result is the same whatever `next` says; a loop over many
    /// records waits less on memory.
    ///
    /// # Errors
    /// As [`Encoder::encode`]; `out` is then left zeroed.
    ///
    /// # Panics
    /// As [`Encoder::encode_into`].
    pub fn encode_into_ahead<'v>(
        &self,
        values: &[Option<&str>],
        out: &mut [u8],
        next: &dyn Fn(usize) -> Option<&'v str>,
    ) -> Result<(), FieldError> {
        assert_eq!(
            values.len(),
            self.n_features,
            "one value per schema feature (ignored ones included)"
        );
        assert_eq!(
            out.len(),
            self.filter_bytes(),
            "output buffer of filter_bytes()"
        );
        SCRATCH.with(|scratch| {
            let Scratch { buffers, memos } = &mut *scratch.borrow_mut();
            let mut memos = (self.memo_budget > 0).then(|| self.thread_memos(memos));
            if let Some(memos) = memos.as_deref() {
                self.prefetch(memos, next);
            }
            buffers.stored = false;
            let result = self.encode_with(values, buffers, memos.as_deref_mut());
            if buffers.stored
                && let Some(memos) = memos
            {
                memos.after_store();
            }
            match result {
                Ok(()) => harden::write_bytes(&buffers.words, out),
                Err(_) => out.fill(0),
            }
            result
        })
    }

    /// Starts fetching the next record's memo slots, for the features whose
    /// memos are too large for the caches (the stored words are fetched once
    /// the look-up has found them, see `encode_with`). A fetch from memory
    /// takes less time than encoding one record, so one record ahead is far
    /// enough. Salted features, whose memo keys must be built, are left out.
    fn prefetch<'v>(&self, memos: &Memos, next: &dyn Fn(usize) -> Option<&'v str>) {
        for (plan, feature) in self.fields.iter().zip(&memos.features) {
            let memo = &feature.values;
            if plan.salt_source.is_none()
                && memo.worth_prefetching()
                && let Some(value) = next(plan.index)
            {
                memo.prefetch_slot(value.as_bytes());
            }
        }
    }

    /// This encoder's memos among a thread's, made on first use; drops those
    /// of dropped encoders and, past [`MEMOS_PER_THREAD`], the least recently used.
    fn thread_memos<'a>(&self, all: &'a mut Vec<ThreadMemos>) -> &'a mut Memos {
        match all.iter().position(|m| m.encoder == self.id) {
            Some(i) if i + 1 == all.len() => {}
            Some(i) => {
                let mine = all.remove(i);
                all.push(mine);
            }
            None => {
                all.retain(|m| m.alive.strong_count() > 0);
                if all.len() >= MEMOS_PER_THREAD {
                    all.remove(0);
                }
                all.push(ThreadMemos {
                    encoder: self.id,
                    alive: Arc::downgrade(&self.alive),
                    memos: Memos::new(self.fields.len(), self.memo_budget),
                });
            }
        }
        &mut all.last_mut().expect("just found or pushed").memos
    }

    /// Encodes one record into `s.words`, with this thread's memos if any.
    fn encode_with(
        &self,
        values: &[Option<&str>],
        s: &mut Buffers,
        mut memos: Option<&mut Memos>,
    ) -> Result<(), FieldError> {
        let n = self.fields.len();
        if s.text.values.len() < self.n_features {
            s.text.values.resize_with(self.n_features, String::new);
        }
        if s.lookups.len() < n {
            s.lookups.resize(n, Lookup::Off);
            s.memo_keys.resize_with(n, Vec::new);
        }
        let far = self.look_up_far(values, memos.as_deref_mut(), &mut s.lookups);
        // Pass 1: every value validated and formatted (salts need other
        // features' values), unless the value memo knows its words.
        for (p, plan) in self.fields.iter().enumerate() {
            let memo = memos.as_deref_mut().map(|m| &mut m.features[p].values);
            s.lookups[p] = self.recall_or_prepare(
                plan,
                values,
                s.lookups[p],
                memo,
                &mut s.memo_keys[p],
                &mut s.text,
            )?;
        }
        // Pass 2: each feature's words ORed into the record's.
        s.words.clear();
        s.words.resize(self.hash_bits.div_ceil(64), 0);
        for (p, plan) in self.fields.iter().enumerate() {
            let feature_memos = memos.as_deref_mut().map(|m| &mut m.features[p]);
            let stored = self.encode_feature(p, plan, values, s, feature_memos)?;
            s.stored |= stored;
        }
        if far && let Some(memos) = memos.as_deref() {
            for (lookup, feature) in s.lookups.iter().zip(&memos.features) {
                if let Lookup::Far(run) = *lookup {
                    cache::or_sparse(feature.values.get(run), &mut s.words);
                }
            }
        }
        self.harden(s);
        Ok(())
    }

    /// Looks up first the values whose memos are too large for the caches,
    /// and starts fetching the words found: they are then fetched while the
    /// other features are looked up and encoded, and read last (an OR of
    /// words does not depend on order). Sets every feature's `lookups` entry;
    /// returns whether any was found.
    #[inline]
    fn look_up_far(
        &self,
        values: &[Option<&str>],
        mut memos: Option<&mut Memos>,
        lookups: &mut [Lookup],
    ) -> bool {
        let mut far = false;
        for (p, plan) in self.fields.iter().enumerate() {
            lookups[p] = Lookup::Off;
            if let Some(memo) = memos.as_deref_mut().map(|m| &mut m.features[p].values)
                && plan.salt_source.is_none()
                && memo.worth_prefetching()
                && memo.active()
            {
                lookups[p] = match memo.lookup(value_key(plan, values, &[])) {
                    Some(run) => {
                        memo.prefetch_run(run);
                        far = true;
                        Lookup::Far(run)
                    }
                    None => Lookup::Miss,
                };
            }
        }
        far
    }

    /// Pass 1 for one feature: what the value memo holds for its value
    /// (`lookup` says what [`Encoder::look_up_far`] found), or else the
    /// value validated and formatted into `text.values`.
    #[inline]
    fn recall_or_prepare(
        &self,
        plan: &FieldPlan,
        values: &[Option<&str>],
        lookup: Lookup,
        memo: Option<&mut cache::Memo<u64>>,
        key: &mut Vec<u8>,
        text: &mut TextBuffers,
    ) -> Result<Lookup, FieldError> {
        match lookup {
            Lookup::Far(_) => return Ok(lookup),
            Lookup::Miss => {
                self.prepare(plan, values, &mut text.values, &mut text.tmp)?;
                return Ok(lookup);
            }
            Lookup::Off | Lookup::Hit(_) => {}
        }
        let mut lookup = Lookup::Off;
        if let Some(memo) = memo
            && memo.active()
        {
            // The raw value, then 0xFF (never in UTF-8) and the salt
            // source's raw value: all that the feature's words depend on.
            if let Some((source, _)) = plan.salt_source {
                key.clear();
                key.extend_from_slice(values[plan.index].unwrap_or("").as_bytes());
                key.push(0xFF);
                key.extend_from_slice(values[source].unwrap_or("").as_bytes());
            }
            if let Some(run) = memo.lookup(value_key(plan, values, key)) {
                if memo.worth_prefetching() {
                    // Read in pass 2, after the other features' look-ups.
                    memo.prefetch_run(run);
                }
                return Ok(Lookup::Hit(run));
            }
            lookup = Lookup::Miss;
        }
        self.prepare(plan, values, &mut text.values, &mut text.tmp)?;
        Ok(lookup)
    }

    /// Pass 2 for feature `p`: its words ORed into `s.words`, from its value
    /// memo or from its tokens (and then kept in the value memo if it
    /// missed). Returns whether a memo stored something.
    #[inline]
    fn encode_feature(
        &self,
        p: usize,
        plan: &FieldPlan,
        values: &[Option<&str>],
        s: &mut Buffers,
        mut memos: Option<&mut cache::FeatureMemos>,
    ) -> Result<bool, FieldError> {
        let lookup = s.lookups[p];
        match (lookup, memos.as_deref_mut()) {
            (Lookup::Hit(run), Some(m)) => {
                cache::or_sparse(m.values.get(run), &mut s.words);
                return Ok(false);
            }
            (Lookup::Far(_), _) => return Ok(false),
            _ => {}
        }
        // A value the memo will keep gets its own words first. A slice,
        // not the Vec: through a `&mut Vec` the compiler reloads its
        // pointer and length after every bit it sets.
        let target: &mut [u64] = if matches!(lookup, Lookup::Miss) {
            s.feature_words.clear();
            s.feature_words.resize(s.words.len(), 0);
            &mut s.feature_words
        } else {
            &mut s.words
        };
        let text = &mut s.text;
        let mut stored = if plan.short_grams
            && let Some(grams) =
                tokenize::ascii_grams(&plan.spec.comparison, &text.values[plan.index])
            && let Some(m) = memos.as_deref_mut()
        {
            self.set_gram_bits(plan, grams, &mut m.grams, &mut text.token, target)
        } else {
            let token_memo = memos.as_deref_mut().map(|m| &mut m.tokens);
            self.set_token_bits(plan, values, &s.lookups, text, token_memo, target)?
        };
        if let (Lookup::Miss, Some(m)) = (lookup, memos) {
            stored = true;
            m.values
                .store(value_key(plan, values, &s.memo_keys[p]), |out| {
                    cache::push_sparse(&s.feature_words, out);
                });
            for (w, f) in s.words.iter_mut().zip(&s.feature_words) {
                *w |= f;
            }
        }
        Ok(stored)
    }

    /// Sets the bits of a value's positional unigrams or bigrams of ASCII
    /// text in `target`: looked up by their bytes in the `Grams` table, so
    /// that they need not be written out or hashed (a gram the table has no
    /// slot for is hashed). Returns whether the table stored something.
    #[inline]
    fn set_gram_bits(
        &self,
        plan: &FieldPlan,
        grams: impl ExactSizeIterator<Item = AsciiGram>,
        table: &mut cache::Grams,
        token: &mut String,
        target: &mut [u64],
    ) -> bool {
        let mut stored = false;
        let count = grams.len();
        for (i, gram) in grams.enumerate() {
            let k = plan.spec.strategy.bits_for(i, count);
            if k == 0 {
                continue;
            }
            match cache::gram_slot(gram) {
                Some(slot) => table.set_bits(slot, k, target, |k, out| {
                    stored = true;
                    let text = gram.text(token).as_bytes();
                    plan.hasher.positions(text, k, self.hash_bits, out);
                }),
                None => {
                    let text = gram.text(token).as_bytes();
                    plan.hasher.insert(text, k, self.hash_bits, target);
                }
            }
        }
        stored
    }

    /// Sets the bits of a value's tokens in `target`, salted if the feature
    /// is, through the token memo when it is on. Returns whether the memo
    /// stored something.
    fn set_token_bits(
        &self,
        plan: &FieldPlan,
        values: &[Option<&str>],
        lookups: &[Lookup],
        text: &mut TextBuffers,
        mut memo: Option<&mut cache::Memo<u32>>,
        target: &mut [u64],
    ) -> Result<bool, FieldError> {
        let spec = &plan.spec;
        tokenize(&spec.comparison, &text.values[plan.index], &mut text.tokens).map_err(|e| {
            FieldError {
                feature: plan.identifier.clone(),
                reason: match e {
                    TokenizeError::NotANumber => RejectReason::NotANumber,
                },
            }
        })?;
        match &spec.salt {
            None => text.salt_prefix.clear(),
            Some(salt) => {
                let source: &str = if plan.salt_from_ignored {
                    value::salt_of_ignored(values[salt.source], &mut text.salt);
                    &text.salt
                } else {
                    // A source the value memo knew was not prepared in pass 1.
                    if let Some((_, Some(q))) = plan.salt_source
                        && matches!(lookups[q], Lookup::Hit(_) | Lookup::Far(_))
                    {
                        self.prepare(&self.fields[q], values, &mut text.values, &mut text.tmp)?;
                    }
                    &text.values[salt.source]
                };
                write_salt_prefix(source, salt.length, &mut text.salt_prefix);
            }
        }
        let mut stored = false;
        let count = text.tokens.len();
        for i in 0..count {
            let k = spec.strategy.bits_for(i, count);
            if k == 0 {
                continue;
            }
            let token = text.tokens.get(i);
            let bytes: &[u8] = match &spec.format {
                Format::String { encoding, .. } => {
                    hashing::encode_token(*encoding, token, &mut text.token_bytes)
                }
                _ => token.as_bytes(),
            };
            let message: &[u8] = if text.salt_prefix.is_empty() {
                bytes
            } else {
                text.message.clear();
                text.message.extend_from_slice(&text.salt_prefix);
                text.message.extend_from_slice(bytes);
                &text.message
            };
            match memo.as_deref_mut().and_then(|m| m.active().then_some(m)) {
                Some(memo) => {
                    let run = match memo.lookup(message) {
                        Some(run) if run.len() >= k => run,
                        // New, or known for a smaller k only.
                        _ => {
                            stored = true;
                            memo.store(message, |out| {
                                plan.hasher.positions(message, k, self.hash_bits, out);
                            })
                        }
                    };
                    for &position in &memo.get(run)[..k] {
                        set_bit(target, position as usize);
                    }
                }
                None => plan.hasher.insert(message, k, self.hash_bits, target),
            }
        }
        Ok(stored)
    }

    /// The record-level hardening of `s.words`, in the schema's order:
    /// XOR folding, BLIP, balancing.
    fn harden(&self, s: &mut Buffers) {
        harden::xor_fold(&mut s.words, self.hash_bits, self.xor_folds);
        if let Some(blip) = &self.blip {
            harden::blip(
                &mut s.words,
                self.l,
                blip.threshold,
                &blip.key,
                &mut s.bytes,
            );
        }
        if let Some(perm) = &self.balance {
            harden::balance(&mut s.words, self.l, perm, &mut s.spare_words);
        }
    }

    /// Validates and formats one feature's value into `prepared[plan.index]`.
    fn prepare(
        &self,
        plan: &FieldPlan,
        values: &[Option<&str>],
        prepared: &mut [String],
        tmp: &mut String,
    ) -> Result<(), FieldError> {
        value::prepare(
            &plan.spec,
            values[plan.index],
            &mut prepared[plan.index],
            tmp,
        )
        .map_err(|reason| FieldError {
            feature: plan.identifier.clone(),
            reason,
        })
    }
}

impl Drop for Encoder {
    /// Drops this encoder's memos on the dropping thread at once; other
    /// threads drop theirs when they next meet a new encoder, or exit.
    fn drop(&mut self) {
        let _ = SCRATCH.try_with(|scratch| {
            if let Ok(mut scratch) = scratch.try_borrow_mut() {
                scratch.memos.retain(|m| m.encoder != self.id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("correct horse battery staple").unwrap()
    }

    fn febrl_schema() -> Schema {
        Schema::from_json(&crate::schema::default_schema_json()).unwrap()
    }

    fn record<'a>(given: &'a str, surname: &'a str, dob: &'a str) -> Vec<Option<&'a str>> {
        // rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id
        vec![
            Some("rec-1"),
            Some(given),
            Some(surname),
            Some("12"),
            Some("main street"),
            None,
            Some("dapto"),
            Some("2530"),
            Some("nsw"),
            Some(dob),
            Some("1234567"),
        ]
    }

    #[test]
    fn encoder_is_send_sync_and_debug_hides_keys() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Encoder>();
        let e = Encoder::new(&febrl_schema(), &secret());
        let shown = format!("{e:?}");
        assert!(
            shown.contains("filter_bits: 1024") && !shown.contains("key"),
            "{shown}"
        );
    }

    #[test]
    fn normalisation_makes_spelling_variants_encode_alike() {
        let e = Encoder::new(&febrl_schema(), &secret());
        let a = e
            .encode(&record("Jean-Pierre", "Dupont", "19560909"))
            .unwrap();
        let b = e
            .encode(&record("jean pierre", "DUPÖNT", "1956-09-09"))
            .unwrap();
        let c = e
            .encode(&record("  JEAN   PIERRE ", "dupont", "09/09/1956"))
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let d = e
            .encode(&record("jean pierre", "dupond", "19560909"))
            .unwrap();
        assert_ne!(a, d);
        assert_eq!(a.len(), 128);
    }

    #[test]
    fn different_secrets_give_different_clks() {
        let r = record("anna", "smith", "19800101");
        let a = Encoder::new(&febrl_schema(), &secret()).encode(&r).unwrap();
        let b = Encoder::new(
            &febrl_schema(),
            &Secret::new("another long project secret").unwrap(),
        )
        .encode(&r)
        .unwrap();
        assert_ne!(a, b);
    }

    const CLKHASH_STYLE: &str = r#"{"version": 3, "clkConfig": {"l": 256, "kdf": {"type": "HKDF"}},
      "features": [
        {"identifier": "id", "ignored": true},
        {"identifier": "name", "format": {"type": "string", "case": "lower", "minLength": 2, "maxLength": 5},
         "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 10}}},
        {"identifier": "age", "format": {"type": "integer", "minimum": 0, "maximum": 120},
         "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": true}, "strategy": {"bitsPerToken": 10},
                     "missingValue": {"sentinel": "N/A", "replaceWith": ""}}},
        {"identifier": "dob", "format": {"type": "date", "format": "%d/%m/%Y"},
         "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 10}}},
        {"identifier": "sex", "format": {"type": "enum", "values": ["f", "m"]},
         "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 10}}},
        {"identifier": "code", "format": {"type": "string", "pattern": "[A-Z]{2}[0-9]+"},
         "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 10}, "hash": {"type": "doubleHash"}}},
        {"identifier": "weight", "format": {"type": "string"},
         "hashing": {"comparison": {"type": "numeric", "thresholdDistance": 5, "resolution": 2}, "strategy": {"bitsPerToken": 10}}}
      ]}"#;

    fn reject(values: [&str; 7]) -> Option<String> {
        let schema = Schema::from_json(CLKHASH_STYLE).unwrap();
        let e = Encoder::new(&schema, &secret());
        let values: Vec<Option<&str>> = values.iter().map(|v| Some(*v)).collect();
        e.encode(&values).err().map(|e| e.to_string())
    }

    #[test]
    fn validation_rejects_with_reasons_that_never_show_the_value() {
        let ok = ["r1", "anna", "42", "01/02/1990", "f", "AB12", "70.5"];
        assert_eq!(reject(ok), None);
        let cases: [([&str; 7], &str); 11] = [
            (
                ["r", "Anna", "42", "01/02/1990", "f", "AB12", "70"],
                "field `name`: value is not in lower case",
            ),
            (
                ["r", "a", "42", "01/02/1990", "f", "AB12", "70"],
                "field `name`: value has 1 characters, fewer than the minimum 2",
            ),
            (
                ["r", "annabel", "42", "01/02/1990", "f", "AB12", "70"],
                "field `name`: value has 7 characters, more than the maximum 5",
            ),
            (
                ["r", "anna", "4x2", "01/02/1990", "f", "AB12", "70"],
                "field `age`: value is not an integer",
            ),
            (
                ["r", "anna", "142", "01/02/1990", "f", "AB12", "70"],
                "field `age`: value is out of range (minimum 0, maximum 120)",
            ),
            (
                ["r", "anna", "", "01/02/1990", "f", "AB12", "70"],
                "field `age`: value is missing",
            ),
            (
                ["r", "anna", "42", "31/02/1990", "f", "AB12", "70"],
                "field `dob`: value is not a valid date in the format %d/%m/%Y",
            ),
            (
                ["r", "anna", "42", "01/02/1990", "x", "AB12", "70"],
                "field `sex`: value is not one of the allowed values",
            ),
            (
                ["r", "anna", "42", "01/02/1990", "f", "ab12", "70"],
                "field `code`: value does not match the pattern \"[A-Z]{2}[0-9]+\"",
            ),
            (
                ["r", "anna", "42", "01/02/1990", "f", "AB12", "heavy"],
                "field `weight`: value is not a number",
            ),
            (
                ["r", "anna", "N/A", "01/02/1990", "f", "AB12", "seventy"],
                "field `weight`: value is not a number",
            ),
        ];
        for (values, expected) in cases {
            assert_eq!(reject(values).as_deref(), Some(expected), "{values:?}");
        }
        // The sentinel is not validated.
        assert_eq!(
            reject(["r", "anna", "N/A", "01/02/1990", "f", "AB12", "70"]),
            None
        );
    }

    #[test]
    fn on_invalid_keep_and_missing() {
        let text = r#"{"version": 3, "clkConfig": {"l": 64, "kdf": {"type": "BLAKE3"}},
          "features": [{"identifier": "dob", "onInvalid": "ONINVALID",
            "format": {"type": "date", "format": "%Y%m%d"},
            "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": true},
                        "strategy": {"bitsPerToken": 3}, "hash": {"type": "blake3"}}}]}"#;
        let keep = Encoder::new(
            &Schema::from_json(&text.replace("ONINVALID", "keep")).unwrap(),
            &secret(),
        );
        let bad = keep.encode(&[Some("19450493")]).unwrap();
        let good = keep.encode(&[Some("19450403")]).unwrap();
        assert_ne!(bad, good);
        assert!(bad.iter().any(|&b| b != 0));
        let missing = Encoder::new(
            &Schema::from_json(&text.replace("ONINVALID", "missing")).unwrap(),
            &secret(),
        );
        assert_eq!(missing.encode(&[Some("19450493")]).unwrap(), vec![0; 8]);
        let reject = Encoder::new(
            &Schema::from_json(&text.replace("ONINVALID", "reject")).unwrap(),
            &secret(),
        );
        assert!(reject.encode(&[Some("19450493")]).is_err());
    }

    fn hardened(extra: &str, salt: &str) -> Encoder {
        let text = format!(
            r#"{{"version": 3, "clkConfig": {{"l": 512, "kdf": {{"type": "BLAKE3"}} {extra}}},
              "features": [
                {{"identifier": "year", "ignored": true}},
                {{"identifier": "name", "normalize": {{}}, "format": {{"type": "string"}},
                  "hashing": {{"comparison": {{"type": "ngram", "n": 2}}, "strategy": {{"bitsPerToken": 15}},
                              "hash": {{"type": "blake3"}} {salt}}}}}]}}"#
        );
        Encoder::new(&Schema::from_json(&text).unwrap(), &secret())
    }

    #[test]
    fn balanced_output_has_length_2l_and_popcount_l() {
        let e = hardened(r#", "balance": true"#, "");
        assert_eq!(e.filter_bits(), 1024);
        for name in ["anna", "bartholomew", "", "x"] {
            let clk = e.encode(&[None, Some(name)]).unwrap();
            assert_eq!(clk.len(), 128);
            assert_eq!(
                clk.iter().map(|b| b.count_ones()).sum::<u32>(),
                512,
                "{name}"
            );
            assert_eq!(clk, e.encode(&[None, Some(name)]).unwrap());
        }
    }

    #[test]
    fn salting_changes_bits_only_with_a_different_salt() {
        let e = hardened("", r#", "salt": {"identifier": "year", "length": 4}"#);
        let a = e.encode(&[Some("1956"), Some("anna")]).unwrap();
        let b = e.encode(&[Some("19561231"), Some("anna")]).unwrap();
        let c = e.encode(&[Some("1957"), Some("anna")]).unwrap();
        assert_eq!(a, b, "only the first 4 characters salt");
        let shared = a
            .iter()
            .zip(&c)
            .map(|(x, y)| (x & y).count_ones())
            .sum::<u32>();
        let set = a.iter().map(|x| x.count_ones()).sum::<u32>();
        assert!(
            shared * 4 < set,
            "different salts share {shared} of {set} bits"
        );
        let unsalted = hardened("", "")
            .encode(&[Some("1956"), Some("anna")])
            .unwrap();
        assert_ne!(a, unsalted);
    }

    #[test]
    fn blip_flips_about_p_and_is_deterministic() {
        let plain = hardened("", "");
        let blipped = hardened(r#", "blip": {"probability": 0.05}"#, "");
        let mut flips = 0u32;
        let names: Vec<String> = (0..300).map(|i| format!("name{i}")).collect();
        for name in &names {
            let a = plain.encode(&[None, Some(name)]).unwrap();
            let b = blipped.encode(&[None, Some(name)]).unwrap();
            assert_eq!(b, blipped.encode(&[None, Some(name)]).unwrap());
            flips += a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x ^ y).count_ones())
                .sum::<u32>();
        }
        let rate = f64::from(flips) / (300.0 * 512.0);
        assert!((0.045..0.055).contains(&rate), "flip rate {rate}");
    }

    #[test]
    fn xor_folding_in_native_mode_halves_the_filter() {
        let folded = hardened(r#", "xor_folds": 1"#, "");
        assert_eq!(folded.filter_bits(), 512);
        let clk = folded.encode(&[None, Some("anna")]).unwrap();
        assert_eq!(clk.len(), 64);
        assert!(clk.iter().any(|&b| b != 0));
    }

    /// The ids of the encoders whose memos this thread keeps.
    fn memo_owners() -> Vec<u64> {
        SCRATCH.with(|s| s.borrow().memos.iter().map(|m| m.encoder).collect())
    }

    #[test]
    fn threads_share_the_memo_budget_within_bounds() {
        for threads in [0, 1, 2, 16] {
            assert_eq!(memo_budget_per_thread(threads), DEFAULT_MEMO_BUDGET);
        }
        assert_eq!(memo_budget_per_thread(32), MEMO_BUDGET_ALL_THREADS / 32);
        assert_eq!(memo_budget_per_thread(64), MEMO_BUDGET_ALL_THREADS / 64);
        assert_eq!(memo_budget_per_thread(1000), MIN_MEMO_BUDGET);
        for threads in 1..300 {
            let each = memo_budget_per_thread(threads);
            assert!((MIN_MEMO_BUDGET..=DEFAULT_MEMO_BUDGET).contains(&each));
            assert!(each * threads <= MEMO_BUDGET_ALL_THREADS.max(MIN_MEMO_BUDGET * threads));
        }
    }

    #[test]
    fn memos_go_with_their_encoder_and_stay_few() {
        let r = record("anna", "smith", "19800101");
        let e = Encoder::new(&febrl_schema(), &secret());
        let clk = e.encode(&r).unwrap();
        assert!(memo_owners().contains(&e.id));
        assert_eq!(e.encode(&r).unwrap(), clk, "from the memos");
        let id = e.id;
        drop(e);
        assert!(!memo_owners().contains(&id));
        let encoders: Vec<Encoder> = (0..6)
            .map(|_| Encoder::new(&febrl_schema(), &secret()))
            .collect();
        for e in &encoders {
            assert_eq!(e.encode(&r).unwrap(), clk);
        }
        let owners = memo_owners();
        assert_eq!(owners.len(), MEMOS_PER_THREAD);
        assert_eq!(owners.last(), Some(&encoders[5].id));
        let off = Encoder::new(&febrl_schema(), &secret()).with_memo_budget(0);
        assert_eq!(off.encode(&r).unwrap(), clk);
        assert!(!memo_owners().contains(&off.id));
    }

    #[test]
    fn fetching_ahead_from_large_memos_changes_no_clk() {
        // Enough distinct surnames for a memo worth fetching ahead, one in 16
        // of them the same so that the memo never pauses, each seen twice.
        // Seven given names: a given name salted with the surname is new
        // on the second sight of most surnames.
        let people: Vec<(String, String, String)> = (0..40_000)
            .map(|i| {
                let surname = if i % 16 == 0 {
                    "smith".to_owned()
                } else {
                    format!("surname{}", i % 20_000)
                };
                (
                    format!("given{}", i % 7),
                    surname,
                    format!("19{:02}{:02}{:02}", i % 100, i % 12 + 1, i % 28 + 1),
                )
            })
            .collect();
        let rows: Vec<Vec<Option<&str>>> = people
            .iter()
            .map(|(given, surname, dob)| record(given, surname, dob))
            .collect();
        // Also with the surname, whose memo is the large one, as the salt
        // of the given name: a salt source found in a large memo is prepared
        // when the salted feature needs it.
        let mut salted: serde_json::Value =
            serde_json::from_str(&crate::schema::default_schema_json()).unwrap();
        let given = salted["features"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|f| f["identifier"] == "given_name")
            .unwrap();
        given["hashing"]["salt"] = serde_json::json!({"identifier": "surname", "length": 4});
        let salted = Schema::from_json(&salted.to_string()).unwrap();
        for schema in [febrl_schema(), salted] {
            let e = Encoder::new(&schema, &secret());
            let plain = Encoder::new(&schema, &secret()).with_memo_budget(0);
            for (i, row) in rows.iter().enumerate() {
                let next = |f: usize| rows.get(i + 1).and_then(|r| r[f]);
                let mut out = vec![0; e.filter_bytes()];
                e.encode_into_ahead(row, &mut out, &next).unwrap();
                if i % 97 == 0 || i % 20_000 < 3 {
                    assert_eq!(out, plain.encode(row).unwrap(), "row {i}");
                }
            }
            SCRATCH.with(|s| {
                let s = s.borrow();
                let memos = &s.memos.iter().find(|m| m.encoder == e.id).unwrap().memos;
                assert!(
                    memos.features.iter().any(|f| f.values.worth_prefetching()),
                    "{memos:?}"
                );
            });
        }
    }

    #[test]
    fn output_is_the_same_on_every_thread() {
        use rayon::prelude::*;
        let e = Encoder::new(&febrl_schema(), &secret());
        let names: Vec<String> = (0..200).map(|i| format!("person {i}")).collect();
        let serial: Vec<Vec<u8>> = names
            .iter()
            .map(|n| e.encode(&record(n, "smith", "19700101")).unwrap())
            .collect();
        let parallel: Vec<Vec<u8>> = names
            .par_iter()
            .map(|n| e.encode(&record(n, "smith", "19700101")).unwrap())
            .collect();
        assert_eq!(serial, parallel);
    }
}
