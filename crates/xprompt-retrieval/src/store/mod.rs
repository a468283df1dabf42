//! On-disk storage: the record log, the content-addressed images, the record payloads and the
//! index snapshot.

pub mod blobs;
pub mod log;
pub mod record;
pub mod snapshot;
