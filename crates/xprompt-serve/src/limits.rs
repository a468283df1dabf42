//! The server's stated limits: every request is checked against them before work starts.

/// Bounds on requests, queues and memory. The defaults suit a small CPU machine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (multipart or JSON), bytes.
    pub max_body_bytes: usize,
    /// Largest uploaded image, width × height (checked from the header before decoding).
    pub max_image_pixels: u64,
    /// Most example pairs in one request (and most retrieved by RAIE).
    pub max_examples: usize,
    /// Longest prompt, instruction or text answer, characters.
    pub max_text_chars: usize,
    /// Most tokens one answer may generate.
    pub max_tokens: usize,
    /// Requests admitted but not finished (being prepared, queued or decoding); beyond it,
    /// 429 with Retry-After.
    pub max_pending: usize,
    /// Request bodies received at once (each up to `max_body_bytes`); beyond it, 429.
    pub max_uploads: usize,
    /// Seconds a request body may take to arrive (408 after).
    pub body_timeout_s: u64,
    /// Sequences decoded together in one forward step.
    pub max_batch: usize,
    /// Compiled tasks kept in memory; the least recently used one goes first.
    pub max_tasks: usize,
    /// Bytes of cached keys/values all compiled tasks may hold together (LRU eviction).
    pub max_task_bytes: usize,
    /// Jobs whose events nobody has read are cancelled and forgotten after this many seconds.
    pub job_ttl_s: u64,
    /// On shutdown, running jobs get this long to finish before they are cancelled.
    pub shutdown_grace_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            max_image_pixels: 4096 * 4096,
            max_examples: 16,
            max_text_chars: 4000,
            max_tokens: 8192,
            max_pending: 64,
            max_uploads: 16,
            body_timeout_s: 120,
            max_batch: 16,
            max_tasks: 64,
            max_task_bytes: 2 << 30,
            job_ttl_s: 600,
            shutdown_grace_s: 10,
        }
    }
}
