//! Moving bytes both ways between two connections.

use tokio::io::{AsyncRead, AsyncWrite};

const BUF: usize = 64 * 1024;

/// Copies until both directions are done, propagating half-close. Returns the bytes moved
/// `a → b` and `b → a`.
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, BUF, BUF).await
}
