//! The stop check of [`super::UNet::forward_cancellable`] and the error a
//! cancelled pass ends with.

/// Why a cancellable forward pass ([`super::UNet::forward_cancellable`]) ended
/// without its features.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The stop check answered true between two blocks.
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<ForwardError> for candle_core::Error {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::Candle(e) => e,
            cancelled @ ForwardError::Cancelled => candle_core::Error::wrap(cancelled),
        }
    }
}

pub(super) type ForwardResult<T> = std::result::Result<T, ForwardError>;

/// The stop check a pass asks between blocks (none for [`super::UNet::forward`]).
#[derive(Clone, Copy)]
pub(super) struct Stop<'a>(pub(super) Option<&'a dyn Fn() -> bool>);

impl Stop<'_> {
    pub(super) fn check(self) -> ForwardResult<()> {
        match self.0 {
            Some(stop) if stop() => Err(ForwardError::Cancelled),
            _ => Ok(()),
        }
    }
}
