//! CLIP's byte-level BPE tokenizer, built with the `tokenizers` crate from the files a diffusers
//! checkpoint ships in `tokenizer/` (and SDXL's `tokenizer_2/`): `tokenizer.json` (all that
//! transformers 5 saves) or `vocab.json` + `merges.txt` (older saves, most checkpoints on the Hub),
//! with `special_tokens_map.json` / `tokenizer_config.json`.
//!
//! The pipeline is transformers' `CLIPTokenizer` (5.x) step for step: NFC, runs of whitespace to
//! one space, lowercase; split on CLIP's word pattern; byte-level symbols; BPE with the `</w>`
//! end-of-word suffix; `<|startoftext|> ... <|endoftext|>`; truncated and padded to
//! `model_max_length` (77) with the checkpoint's pad token (SDXL's two tokenizers pad differently).
//! Like transformers, dace takes only the vocabulary, the merges and the added tokens from a
//! `tokenizer.json` and builds CLIP's pipeline around them itself, so both forms of one tokenizer
//! give the same ids by construction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::error::{DaceError, Result};
use crate::fsio;

/// CLIP's word pattern (transformers 5.x puts the two special tokens first).
const WORD_PATTERN: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Special tokens and length, from `special_tokens_map.json` and `tokenizer_config.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipSpecialTokens {
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
    pub max_length: usize,
}

impl Default for ClipSpecialTokens {
    fn default() -> Self {
        ClipSpecialTokens {
            bos: "<|startoftext|>".into(),
            eos: "<|endoftext|>".into(),
            unk: "<|endoftext|>".into(),
            pad: "<|endoftext|>".into(),
            max_length: 77,
        }
    }
}

/// A special token is written either as a string or as `{"content": ...}` (AddedToken).
fn token_text(v: &Value) -> Option<String> {
    v.as_str().map(String::from).or_else(|| v.get("content").and_then(Value::as_str).map(String::from))
}

impl ClipSpecialTokens {
    /// Reads the optional JSON files of a tokenizer directory; later files override earlier ones.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut s = ClipSpecialTokens::default();
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let v: Value = fsio::read_json(&path)?;
            for (key, slot) in [("bos_token", &mut s.bos), ("eos_token", &mut s.eos), ("unk_token", &mut s.unk), ("pad_token", &mut s.pad)]
            {
                if let Some(text) = v.get(key).and_then(token_text) {
                    *slot = text;
                }
            }
            if let Some(n) = v.get("model_max_length").and_then(Value::as_u64) {
                // transformers writes a huge sentinel when no limit is set; CLIP's is 77.
                if n < 1 << 20 {
                    s.max_length = n as usize;
                }
            }
        }
        if s.max_length < 2 {
            return Err(DaceError::bad_file(dir, format!("model_max_length {} leaves no room for a prompt", s.max_length)));
        }
        Ok(s)
    }
}

/// A CLIP tokenizer: prompts to fixed-length id sequences.
pub struct ClipTokenizer {
    inner: Tokenizer,
    pub special: ClipSpecialTokens,
    pub pad_id: u32,
    pub eos_id: u32,
    /// sha256 of the tokenizer's files (`vocab.json` + `merges.txt`, or `tokenizer.json`) and
    /// the special tokens (part of a prompt cache's key).
    pub fingerprint: String,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer").field("special", &self.special).field("fingerprint", &self.fingerprint).finish()
    }
}

fn tk_err(path: &Path, what: &str, e: impl std::fmt::Display) -> DaceError {
    DaceError::bad_file(path, format!("{what}: {e}"))
}

/// What a tokenizer is built from, whichever files hold it.
struct Source {
    vocab: HashMap<String, u32>,
    merges: Vec<(String, String)>,
    /// Tokens added on top of the vocabulary, with the ids the file gives them
    /// (`tokenizer.json`'s `added_tokens`; none for vocab.json + merges.txt).
    added: Vec<(u32, AddedToken)>,
    /// The files that hold the vocabulary and the merges (named in errors).
    vocab_path: PathBuf,
    merges_path: PathBuf,
    /// The files' bytes, in the order the fingerprint hashes them.
    files: Vec<Vec<u8>>,
}

/// The parts of a `tokenizer.json` that transformers 5's `CLIPTokenizer` takes from it.
#[derive(Deserialize)]
struct TokenizerJson {
    model: BpeJson,
    #[serde(default)]
    added_tokens: Vec<AddedTokenJson>,
}

#[derive(Deserialize)]
struct BpeJson {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    vocab: HashMap<String, u32>,
    merges: Vec<MergeJson>,
}

/// tokenizers >= 0.20 writes a merge as a pair, older versions as one `"left right"` string.
#[derive(Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Pair(String, String),
    Line(String),
}

#[derive(Deserialize)]
struct AddedTokenJson {
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

impl Source {
    /// `vocab.json` (token -> id) and `merges.txt`.
    fn vocab_merges(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        if !vocab_path.exists() {
            return Err(DaceError::bad_file(dir, "no tokenizer: neither tokenizer.json nor vocab.json + merges.txt"));
        }
        let vocab_bytes = fsio::read(&vocab_path)?;
        let merges_bytes = fsio::read(&merges_path)?;
        let vocab: HashMap<String, u32> =
            serde_json::from_slice(&vocab_bytes).map_err(|e| tk_err(&vocab_path, "not a token -> id JSON object", e))?;
        let merges_text = std::str::from_utf8(&merges_bytes).map_err(|e| tk_err(&merges_path, "not UTF-8", e))?;
        let merges = parse_merges(&merges_path, merges_text)?;
        Ok(Source { vocab, merges, added: Vec::new(), vocab_path, merges_path, files: vec![vocab_bytes, merges_bytes] })
    }

    /// `tokenizer.json`: its BPE model's vocabulary and merges, and its added tokens.
    fn json(path: &Path) -> Result<Self> {
        let bytes = fsio::read(path)?;
        let file: TokenizerJson = serde_json::from_slice(&bytes).map_err(|e| tk_err(path, "not a BPE tokenizer.json", e))?;
        if let Some(kind) = file.model.kind.as_deref().filter(|k| *k != "BPE") {
            return Err(DaceError::bad_file(path, format!("a {kind} model: CLIP's tokenizer is BPE")));
        }
        let mut merges = Vec::with_capacity(file.model.merges.len());
        for (i, merge) in file.model.merges.into_iter().enumerate() {
            let pair = match merge {
                MergeJson::Pair(a, b) if !a.is_empty() && !b.is_empty() => Some((a, b)),
                MergeJson::Pair(..) => None,
                MergeJson::Line(line) => merge_pair(&line),
            };
            merges.push(pair.ok_or_else(|| DaceError::bad_file(path, format!("merge {i}: expected two non-empty symbols")))?);
        }
        let added = file.added_tokens.into_iter().map(|a| (a.id, a.token)).collect();
        let (vocab_path, merges_path) = (path.to_path_buf(), path.to_path_buf());
        Ok(Source { vocab: file.model.vocab, merges, added, vocab_path, merges_path, files: vec![bytes] })
    }

    /// A token's id: in the vocabulary, or among the added tokens.
    fn id(&self, token: &str, what: &str) -> Result<u32> {
        self.vocab
            .get(token)
            .copied()
            .or_else(|| self.added.iter().find(|(_, a)| a.content == token).map(|(id, _)| *id))
            .ok_or_else(|| tk_err(&self.vocab_path, what, format!("token {token:?} is not in the vocabulary")))
    }
}

impl ClipTokenizer {
    /// Loads the tokenizer in `dir`: from `tokenizer.json` when it is there, else from
    /// `vocab.json` + `merges.txt`; the special tokens and the length come from the optional
    /// special-token files either way.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let special = ClipSpecialTokens::from_dir(dir)?;
        let json = dir.join("tokenizer.json");
        let source = if json.is_file() { Source::json(&json)? } else { Source::vocab_merges(dir)? };
        Self::build(dir, source, special)
    }

    fn build(dir: &Path, src: Source, special: ClipSpecialTokens) -> Result<Self> {
        let (bos_id, eos_id, pad_id) = (src.id(&special.bos, "bos")?, src.id(&special.eos, "eos")?, src.id(&special.pad, "pad")?);
        src.id(&special.unk, "unk")?;
        let mut inner = clip_pipeline(&src, &special)?;
        inner.with_post_processor(Some(
            RobertaProcessing::new((special.eos.clone(), eos_id), (special.bos.clone(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        add_tokens(&mut inner, &src, &special)?;
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: special.max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| tk_err(dir, "truncation", e))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(special.max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: special.pad.clone(),
        }));

        let mut h = Sha256::new();
        for part in src.files.iter().map(Vec::as_slice).chain([format!("{special:?}").as_bytes()]) {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let fingerprint = format!("{:x}", h.finalize());
        Ok(ClipTokenizer { inner, special, pad_id, eos_id, fingerprint })
    }

    /// `max_length` ids: `<|startoftext|>`, the prompt's tokens, `<|endoftext|>`, padding.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(prompt, true).map_err(|e| DaceError::Invalid(format!("tokenizing {prompt:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }
}

/// transformers' `CLIPTokenizer`: BPE over the source's vocabulary and merges, with CLIP's
/// normalizer and pre-tokenizer.
fn clip_pipeline(src: &Source, special: &ClipSpecialTokens) -> Result<Tokenizer> {
    let bpe = BPE::builder()
        .vocab_and_merges(src.vocab.clone().into_iter().collect::<Vocab>(), src.merges.clone())
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix("</w>".into())
        .unk_token(special.unk.clone())
        .fuse_unk(false)
        .build()
        .map_err(|e| tk_err(&src.merges_path, "BPE", e))?;
    let mut inner = Tokenizer::new(bpe);
    let whitespace = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ").expect("constant regex");
    inner.with_normalizer(Some(NormalizerSequence::new(vec![NFC.into(), whitespace.into(), Lowercase.into()])));
    let words = Split::new(SplitPattern::Regex(WORD_PATTERN.into()), SplitDelimiterBehavior::Removed, true).expect("constant regex");
    // Python's ByteLevel(add_prefix_space=False) keeps trim_offsets and use_regex at True.
    inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![words.into(), ByteLevel::new(false, true, true).into()])));
    Ok(inner)
}

/// The file's added tokens (with their own flags), then the special tokens (split out of the
/// prompt before BPE, as transformers does with every special token, "!" included where it pads).
/// An added token must keep the id its file gives it.
fn add_tokens(inner: &mut Tokenizer, src: &Source, special: &ClipSpecialTokens) -> Result<()> {
    for (_, token) in &src.added {
        if token.special {
            inner.add_special_tokens(std::slice::from_ref(token));
        } else {
            inner.add_tokens(std::slice::from_ref(token));
        }
    }
    let specials: Vec<AddedToken> =
        [&special.bos, &special.eos, &special.unk, &special.pad].into_iter().map(|t| AddedToken::from(t.clone(), true)).collect();
    inner.add_special_tokens(&specials);
    for (id, token) in &src.added {
        let got = inner.token_to_id(&token.content);
        if got != Some(*id) {
            return Err(DaceError::bad_file(
                &src.vocab_path,
                format!("added token {:?} has id {id}, but would get {got:?} after the vocabulary", token.content),
            ));
        }
    }
    Ok(())
}

/// One merge, `left right`.
fn merge_pair(line: &str) -> Option<(String, String)> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => Some((a.to_string(), b.to_string())),
        _ => None,
    }
}

/// `merges.txt`: an optional `#version` line, then one `left right` pair per line.
fn parse_merges(path: &Path, text: &str) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let pair =
            merge_pair(line).ok_or_else(|| DaceError::bad_file(path, format!("line {}: expected `left right`, found {line:?}", i + 1)))?;
        merges.push(pair);
    }
    Ok(merges)
}
