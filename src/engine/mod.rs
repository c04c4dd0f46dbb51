//! The in-process inference runtime.
//!
//! Owns model loading, tokenization, chat templates, our llama-family forward pass, sampling and
//! the generation loop. It must not import anything HTTP, storage or API related: the server
//! layers sit on top of it, never the other way round.

pub mod chat_prompt;
pub mod generate;
pub mod grammar;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod priority;
pub mod requantize;
pub mod sampler;
pub mod scheduler;
pub mod source;
pub mod stop;
pub mod team;
pub mod template;
pub mod tokenizer;
pub mod tool_parser;
pub mod tools;
