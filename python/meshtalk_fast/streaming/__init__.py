"""Live inference: ``StreamingAnimator`` (animator), the streaming log-mel, and the Live Link sender."""
