//! xprompt-core: the Chameleon-family decoder, vocabulary, sequence format, checkpoint
//! loading and the numerical building blocks shared by the rest of xprompt.
pub mod npy;
