//! The command line's tests in one binary: the `cleandift` executable run as
//! a user runs it (match, eval, train, bench, info), its refusals, and the
//! real GUI binary under Xvfb.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/xvfb.rs"]
mod xvfb_server;

mod architecture_doc;
mod bench_dino;
mod bench_parity;
mod cli_trust;
mod eval_scale;
mod eval_sources;
mod limits;
mod match_downscaled;
mod match_figure;
mod match_points;
mod recipes;
mod research_cli;
mod run_safety;
mod run_safety_outputs;
mod single_file;
mod train;
mod xvfb;
