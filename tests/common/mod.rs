#![allow(dead_code)]

pub mod mock_anthropic;
pub mod real_cli;
