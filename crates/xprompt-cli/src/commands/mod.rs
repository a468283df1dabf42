//! One module per subcommand.
pub mod bench;
pub mod debug;
pub mod inspect;
// <modules: add new `pub mod` lines above this line>
