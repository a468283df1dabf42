//! One module per subcommand.
pub mod bench;
pub mod bench_checkpoint;
pub mod bench_linear;
pub mod bench_serve;
pub mod data;
pub mod db;
pub mod debug;
pub mod demo;
pub mod eval;
pub mod eval_icl;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod pretokenize;
pub mod quantize;
pub mod serve;
pub mod train;
pub mod train_vq;
pub mod vq;
// <modules: add new `pub mod` lines above this line>
