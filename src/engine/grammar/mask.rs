//! Which vocabulary tokens a grammar allows next, and the per-sequence constraint the engine
//! applies before each sampling step.
//!
//! The vocabulary is indexed once per tokenizer as a byte trie ([`TokenTrie`]): a state's
//! allowed set is a walk of the trie that feeds each edge's byte to the matcher and drops a
//! whole subtree as soon as its prefix is refused, so tokens sharing a refused first byte cost
//! one check. The allowed set depends only on the matcher's state, and generations revisit the
//! same states (inside a free string, after a comma…), so each grammar keeps the sets it has
//! computed as bitmaps ([`GrammarMasks`]), shared by every sequence using it. End-of-generation
//! tokens are allowed exactly when the text so far is a complete sentence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Grammar, State};
use crate::engine::tokenizer::Tokenizer;

/// Most states whose allowed-token bitmaps a grammar keeps (each is vocab/8 bytes).
pub const MASK_CACHE_ENTRIES: usize = 512;

#[derive(Debug, Default)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    tokens: Vec<u32>,
}

/// The vocabulary's text tokens as a byte trie, built once per tokenizer.
#[derive(Debug)]
pub struct TokenTrie {
    nodes: Vec<TrieNode>,
    bytes: Vec<Option<Box<[u8]>>>,
    eog: Vec<u32>,
}

impl TokenTrie {
    /// Index `tokenizer`'s vocabulary (special and empty tokens are never text).
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let n = tokenizer.vocab_size();
        let mut nodes = vec![TrieNode::default()];
        let mut bytes = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let b: Option<Box<[u8]>> = if tokenizer.is_special(id) || tokenizer.is_eog(id) {
                None
            } else {
                tokenizer
                    .token_bytes(id)
                    .filter(|b| !b.is_empty())
                    .map(Box::from)
            };
            if let Some(b) = &b {
                let mut at = 0usize;
                for &byte in b.iter() {
                    at = match nodes[at].children.iter().find(|(c, _)| *c == byte) {
                        Some(&(_, next)) => next as usize,
                        None => {
                            nodes.push(TrieNode::default());
                            let next = nodes.len() - 1;
                            nodes[at].children.push((byte, next as u32));
                            next
                        }
                    };
                }
                nodes[at].tokens.push(id);
            }
            bytes.push(b);
        }
        Self {
            nodes,
            bytes,
            eog: tokenizer.eog_ids().to_vec(),
        }
    }

    /// The text bytes of `id`, if it is a text token.
    pub fn bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).and_then(|b| b.as_deref())
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Bit `id` set for every token `state` allows next.
    ///
    /// The walk interns the states it meets and remembers each (state, byte) step, so the
    /// matcher runs once per distinct step rather than once per trie edge: inside a free
    /// string nearly every edge leads back to the same state.
    fn allowed(&self, grammar: &Grammar, state: &State) -> Vec<u64> {
        const UNKNOWN: u32 = u32::MAX;
        const DEAD: u32 = u32::MAX - 1;
        let mut bits = vec![0u64; self.bytes.len().div_ceil(64)];
        let mut set = |id: u32| {
            if let Some(w) = bits.get_mut(id as usize / 64) {
                *w |= 1 << (id % 64);
            }
        };
        if state.is_complete() {
            self.eog.iter().for_each(|&id| set(id));
        }
        let mut states = vec![state.clone()];
        let mut ids: HashMap<State, u32> = HashMap::from([(state.clone(), 0)]);
        let mut steps: Vec<Box<[u32; 256]>> = vec![Box::new([UNKNOWN; 256])];
        let mut todo = vec![(0usize, 0u32)];
        while let Some((at, sid)) = todo.pop() {
            let node = &self.nodes[at];
            if at != 0 {
                node.tokens.iter().for_each(|&id| set(id));
            }
            for &(byte, child) in &node.children {
                let mut next = steps[sid as usize][usize::from(byte)];
                if next == UNKNOWN {
                    next = match states[sid as usize].feed(grammar, byte) {
                        None => DEAD,
                        Some(st) => *ids.entry(st).or_insert_with_key(|st| {
                            states.push(st.clone());
                            steps.push(Box::new([UNKNOWN; 256]));
                            states.len() as u32 - 1
                        }),
                    };
                    steps[sid as usize][usize::from(byte)] = next;
                }
                if next != DEAD {
                    todo.push((child as usize, next));
                }
            }
        }
        bits
    }
}

/// A grammar with the allowed-token bitmaps of the states it has reached.
#[derive(Debug)]
pub struct GrammarMasks {
    grammar: Arc<Grammar>,
    masks: Mutex<HashMap<State, Arc<[u64]>>>,
}

impl GrammarMasks {
    /// Masks for `grammar` (computed as states are reached).
    pub fn new(grammar: Arc<Grammar>) -> Self {
        Self {
            grammar,
            masks: Mutex::new(HashMap::new()),
        }
    }

    /// The grammar.
    pub fn grammar(&self) -> &Arc<Grammar> {
        &self.grammar
    }

    fn allowed(&self, trie: &TokenTrie, state: &State) -> Arc<[u64]> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still whole.
        if let Some(m) = self
            .masks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(state)
        {
            return m.clone();
        }
        let mask: Arc<[u64]> = trie.allowed(&self.grammar, state).into();
        let mut masks = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        if masks.len() >= MASK_CACHE_ENTRIES {
            masks.clear();
        }
        masks.insert(state.clone(), mask.clone());
        mask
    }
}

/// One sequence's constraint: where it is in a grammar, over the engine's token trie.
#[derive(Debug, Clone)]
pub struct GrammarConstraint {
    masks: Arc<GrammarMasks>,
    trie: Arc<TokenTrie>,
    state: State,
}

impl GrammarConstraint {
    /// At the start of `masks`' grammar.
    pub fn new(masks: Arc<GrammarMasks>, trie: Arc<TokenTrie>) -> Self {
        let state = masks.grammar.start();
        Self { masks, trie, state }
    }

    /// Whether the text so far is complete.
    pub fn is_complete(&self) -> bool {
        self.state.is_complete()
    }

    /// Set every logit whose token cannot come next to `-inf`.
    pub fn mask(&mut self, logits: &mut [f32]) {
        let allowed = self.masks.allowed(&self.trie, &self.state);
        for (i, logit) in logits.iter_mut().enumerate() {
            let ok = allowed.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1);
            if !ok {
                *logit = f32::NEG_INFINITY;
            }
        }
    }

    /// Advance past the sampled token. False if it was not allowed (the state is unchanged).
    pub fn advance(&mut self, id: u32) -> bool {
        if self.trie.is_eog(id) {
            return self.state.is_complete();
        }
        let Some(bytes) = self.trie.bytes(id) else {
            return false;
        };
        match self.state.feed_all(self.masks.grammar(), bytes) {
            Some(next) => {
                self.state = next;
                true
            }
            None => false,
        }
    }
}

/// `response_format: json_schema` as the engine runs it: the schema as given (relayed to remote
/// backends unchanged) and its compiled grammar. Two are equal, and print the same (the
/// response cache keys on it), when their name, schema and strictness are.
pub struct JsonSchemaFormat {
    /// `json_schema.name`.
    pub name: String,
    /// `json_schema.schema`.
    pub schema: serde_json::Value,
    /// `json_schema.strict`.
    pub strict: bool,
    /// Keywords not enforced (non-strict only).
    pub warnings: Vec<String>,
    /// The grammar and its masks.
    pub masks: Arc<GrammarMasks>,
}

impl std::fmt::Debug for JsonSchemaFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaFormat")
            .field("name", &self.name)
            .field("schema", &self.schema.to_string())
            .field("strict", &self.strict)
            .finish()
    }
}

impl PartialEq for JsonSchemaFormat {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.schema == other.schema && self.strict == other.strict
    }
}

/// Compiled schemas by their text, so a schema sent with every request compiles once.
pub struct SchemaCache {
    entries: moka::sync::Cache<String, Arc<JsonSchemaFormat>>,
    max_elements: usize,
}

impl SchemaCache {
    /// Up to `entries` schemas, each compiling to at most `max_elements` grammar elements.
    pub fn new(entries: u64, max_elements: usize) -> Self {
        Self {
            entries: moka::sync::Cache::new(entries),
            max_elements,
        }
    }

    /// The compiled form of `schema` (from the cache when it was compiled before).
    pub fn get(
        &self,
        name: &str,
        schema: &serde_json::Value,
        strict: bool,
    ) -> Result<Arc<JsonSchemaFormat>, super::schema::SchemaError> {
        self.get_framed(name, schema, strict, None)
    }

    /// [`get`](Self::get) for documents framed by literal text
    /// ([`compile_framed`](super::schema::compile_framed)).
    pub fn get_framed(
        &self,
        name: &str,
        schema: &serde_json::Value,
        strict: bool,
        framing: Option<&super::schema::Framing<'_>>,
    ) -> Result<Arc<JsonSchemaFormat>, super::schema::SchemaError> {
        let key = format!("{strict}\u{0}{name}\u{0}{framing:?}\u{0}{schema}");
        if let Some(hit) = self.entries.get(&key) {
            return Ok(hit);
        }
        let compiled = super::schema::compile_framed(schema, strict, self.max_elements, framing)?;
        let format = Arc::new(JsonSchemaFormat {
            name: name.to_string(),
            schema: schema.clone(),
            strict,
            warnings: compiled.warnings,
            masks: Arc::new(GrammarMasks::new(compiled.grammar)),
        });
        self.entries.insert(key, format.clone());
        Ok(format)
    }
}
