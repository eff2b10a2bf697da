//! Properties: round trips and totality.
