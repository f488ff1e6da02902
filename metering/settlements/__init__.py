"""x402 settlements: payments reported by resource servers, verified on chain."""
