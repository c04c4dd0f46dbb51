//! The one integration-test binary (linking Candle once, not once per file): a module per
//! feature, shared helpers in `common` (the real model, a real server on 127.0.0.1:0 with a
//! fresh SQLite file, HTTP/SSE/WebSocket clients, a stand-in remote OpenAI server).
//!
//! Tests that run a model (a server's, a CLI process's, an in-process engine) take the one
//! model lock in `common` (`common::serial()`, or through the engine accessors), so two model
//! threads never compete for the cores.

// Holding the model lock across awaits is the point: a test keeps it until it is done.
#![allow(clippy::await_holding_lock)]

mod common;

mod accounts;
mod backends;
mod blog;
mod browser;
mod cli;
mod cli_accounts;
mod conversation_tools;
mod crash;
mod deploy;
mod generate;
mod gguf_errors;
mod kquants;
mod model_reference;
mod model_source;
mod openai_sdk;
mod playground;
mod postgres;
mod proxy;
mod replicas;
mod safetensors_reference;
mod scheduler;
mod server;
mod shutdown;
mod store;
mod structured;
mod template_reference;
mod tls;
mod tokenizer_reference;
mod tools;
mod web;
mod ws;
