//! Metrics, each in its own file with its convention documented (docs/EVAL.md):
//! `image` (PSNR, SSIM as scikit-image), `dense` (mIoU, depth, normals, edge F-score), `text` (exact match,
//! token F1).

pub mod dense;
pub mod image;
pub mod text;

pub use dense::{depth_metrics, edge_f_score, normal_angles, Confusion, DepthMetrics, EdgeScore};
pub use image::{psnr, ssim};
pub use text::{exact_match, normalise_answer, token_f1};
