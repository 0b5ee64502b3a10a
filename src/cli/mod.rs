//! The binary's subcommands that are more than one line: argument types and their output.
//! Each file owns one command; none holds protocol logic or library code.

pub mod record;
